"""Reads a Hugging Face Llama/Mistral checkpoint directory into a `ModelConfig` and our params.

Real users bring HF checkpoints (config.json + safetensors, single or sharded). Tensors are
named and shaped here but read only when the model is placed (`names.LazyTensor`: each
device's slice, in the checkpoint's dtype, bf16 as `ml_dtypes.bfloat16`), so a 7B model
never sits whole in host memory as float32; Linear weights are transposed into our
[in, out] kernels by the shared name table.
"""

import json
import logging
import os
import pathlib
import re
from typing import Any

import numpy as np
import safetensors

from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import names

SUPPORTED_ARCHITECTURES = ('LlamaForCausalLM', 'MistralForCausalLM')
SUPPORTED_MODEL_TYPES = ('llama', 'mistral')
_HUB_ID = re.compile(r'^[\w.-]+/[\w.-]+$')
# Buffers some exporters save next to the weights; the model recomputes them.
_IGNORED = re.compile(r'.*rotary_emb\.inv_freq$')
_HUB_FILES = ['*.json', '*.safetensors', 'tokenizer.model', '*.jinja']


def _read_config(path: pathlib.Path) -> dict[str, Any]:
  file = path / 'config.json'
  if not file.is_file():
    raise UserError(f'{path} has no config.json; pass a Hugging Face checkpoint directory')
  try:
    return json.loads(file.read_text(encoding='utf-8'))
  except (OSError, ValueError) as error:
    raise UserError(f'{file} is not valid JSON ({error}); re-download the checkpoint') from error


def _check_supported(hf: dict[str, Any], path: pathlib.Path) -> None:
  archs = hf.get('architectures') or []
  if not (set(archs) & set(SUPPORTED_ARCHITECTURES)
          or (not archs and hf.get('model_type') in SUPPORTED_MODEL_TYPES)):
    found = ', '.join(archs) or hf.get('model_type') or 'unknown'
    raise UserError(f'{path} holds a {found} model; only '
                    f'{" / ".join(SUPPORTED_ARCHITECTURES)} checkpoints are supported')
  if hf.get('attention_bias') or hf.get('mlp_bias'):
    raise UserError(f'{path} uses attention/MLP biases, which our Llama model does not have')
  if hf.get('hidden_act', 'silu') != 'silu':
    raise UserError(f'{path} uses activation {hf["hidden_act"]!r}; only silu is supported')
  rope = hf.get('rope_scaling') or hf.get('rope_parameters') or {}
  if rope.get('rope_type', rope.get('type', 'default')) != 'default':
    logging.warning('%s: rope_scaling %s is ignored; long contexts will differ from HF', path,
                    rope)
  if hf.get('sliding_window') and hf['sliding_window'] < hf.get('max_position_embeddings', 0):
    logging.warning('%s: sliding_window=%s is ignored (full attention)', path,
                    hf['sliding_window'])


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
  """Maps config.json fields (transformers 4 and 5 spellings) to our config."""
  heads = hf['num_attention_heads']
  rope_theta = hf.get('rope_theta') or (hf.get('rope_parameters') or {}).get('rope_theta')
  eos = hf.get('eos_token_id')
  eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)
  return ModelConfig(
      vocab_size=hf['vocab_size'],
      num_layers=hf['num_hidden_layers'],
      embed_dim=hf['hidden_size'],
      hidden_dim=hf['intermediate_size'],
      num_heads=heads,
      num_kv_heads=hf.get('num_key_value_heads') or heads,
      head_dim=hf.get('head_dim') or hf['hidden_size'] // heads,
      rope_theta=float(rope_theta or 10_000.0),
      norm_eps=float(hf.get('rms_norm_eps', 1e-6)),
      tie_embeddings=bool(hf.get('tie_word_embeddings', False)),
      max_seq_len=int(hf.get('max_position_embeddings', 2048)),
      bos_token_id=hf.get('bos_token_id'),
      eos_token_ids=eos_ids,
  )


def _generation_ids(path: pathlib.Path) -> dict[str, Any]:
  """bos/eos ids from generation_config.json, which wins: chat models list extra stop ids there."""
  file = path / 'generation_config.json'
  try:
    settings = json.loads(file.read_text(encoding='utf-8')) if file.is_file() else {}
  except (OSError, ValueError) as error:
    raise UserError(f'{file} is not valid JSON ({error}); re-download the checkpoint') from error
  return {k: settings[k] for k in ('bos_token_id', 'eos_token_id') if settings.get(k) is not None}


def _weight_files(path: pathlib.Path) -> list[pathlib.Path]:
  """The safetensors files, from the shard index when there is one."""
  index = path / 'model.safetensors.index.json'
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text(encoding='utf-8'))['weight_map']
    except (OSError, ValueError, KeyError) as error:
      raise UserError(f'{index} is not a valid shard index ({error}); re-download it') from error
    files = [path / name for name in dict.fromkeys(weight_map.values())]
  elif (path / 'model.safetensors').is_file():
    files = [path / 'model.safetensors']
  else:
    other = ' (found PyTorch .bin weights: convert them to safetensors)' if any(
        path.glob('*.bin')) else ''
    raise UserError(f'{path} has no model.safetensors or model.safetensors.index.json{other}')
  missing = [f.name for f in files if not f.is_file()]
  if missing:
    raise UserError(f'{path} lacks weight shards {missing}; the download is incomplete')
  return files


def _read_tensors(file: pathlib.Path, params: dict) -> None:
  """Adds one safetensors file's tensors to `params` as `LazyTensor`s: renamed, and read
  (transposed into our [in, out] layout) only when placed, slice by slice."""
  try:
    with safetensors.safe_open(str(file), framework='np') as reader:
      for key in reader.keys():
        found = names.lookup(key, 'hf')
        if found is None:
          if _IGNORED.match(key):
            continue
          raise UserError(f'{file} holds tensor {key!r}, which a Llama model does not have')
        entry, layer = found
        part = reader.get_slice(key)
        shape = tuple(part.get_shape())
        dtype = reader.get_tensor(key).dtype if not shape else part[(slice(0, 1),) * len(
            shape)].dtype
        if entry.transpose:
          shape = shape[::-1]
        params[entry.ours.replace('{i}', layer)] = names.LazyTensor(
            shape, dtype, _slice_reader(file, key, entry.transpose))
  except UserError:
    raise
  except Exception as error:  # safetensors raises its own error types on corrupt files.
    raise UserError(f'{file} cannot be read as safetensors ({error}); re-download it') from error


def _slice_reader(file: pathlib.Path, key: str, transpose: bool):
  """index (in our layout) -> that part of the tensor, read from the memory-mapped file."""
  def read(index):
    with safetensors.safe_open(str(file), framework='np') as reader:
      part = reader.get_slice(key)
      if transpose:  # Ours [in, out] = the checkpoint's [out, in] transposed.
        return np.ascontiguousarray(part[index[::-1]].T)
      return part[index]

  return read


def load_hf_dir(path: str | os.PathLike) -> tuple[ModelConfig, dict[str, names.LazyTensor]]:
  """`(config, flat_params)` from a local HF checkpoint directory (lazy tensors)."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise UserError(f'{path} is not a directory; pass a Hugging Face checkpoint directory')
  hf = _read_config(path)
  _check_supported(hf, path)
  hf |= _generation_ids(path)
  try:
    config = config_from_hf(hf)
  except (KeyError, TypeError, ValueError) as error:
    raise UserError(f'{path}/config.json is missing or has a bad field ({error})') from error
  params = {}
  for file in _weight_files(path):
    _read_tensors(file, params)
  if config.tie_embeddings:
    params.pop('lm_head.kernel', None)  # Some exporters save the tied copy too.
  names.check_params(config, params, f'checkpoint {path}')
  return config, params


def resolve_hf(name: str | os.PathLike) -> pathlib.Path:
  """A local checkpoint directory as is, or a hub id downloaded (or found in the HF cache)."""
  path = pathlib.Path(name).expanduser()
  if path.is_dir():
    return path
  name = str(name)
  if not _HUB_ID.match(name):
    raise UserError(f'{name} is neither a local directory nor a Hugging Face hub id (org/name)')
  import huggingface_hub  # pylint: disable=g-import-not-at-top  # Only needed for hub ids.
  offline = os.environ.get('HF_HUB_OFFLINE', '').lower() in ('1', 'true', 'yes', 'on')
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(
        name, allow_patterns=_HUB_FILES, local_files_only=offline))
  except Exception as error:  # Network, auth and missing-repo errors all land here.
    reason = ' '.join(str(error).split())[:200]
    mode = 'offline (HF_HUB_OFFLINE is set) and not in the local HF cache' if offline else (
        'could not be downloaded')
    raise UserError(f'hub model {name} {mode}: {reason}; download it elsewhere and pass its '
                    'local directory') from error
