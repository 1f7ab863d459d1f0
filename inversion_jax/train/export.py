"""A round's adapters in other tools' formats: PEFT, a merged HF checkpoint, a llama.cpp LoRA.

A run keeps its adapters as Orbax checkpoints (checkpointing.py). Here they become
  * `peft`: adapter_config.json + adapter_model.safetensors, PEFT's names for a Llama
    (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, A [r, in], B [out, r]),
    so `PeftModel.from_pretrained(base, dir)` applies them;
  * `merged`: the base weights with W + A B alpha/r folded in, as config.json +
    model.safetensors (+ the tokenizer) that `AutoModelForCausalLM` loads;
  * `gguf`: a llama.cpp LoRA adapter (`general.type = adapter`, `adapter.type = lora`,
    `adapter.lora.alpha`), tensors `blk.{i}.attn_q.weight.lora_a` / `.lora_b` as llama.cpp's
    convert_lora_to_gguf.py writes them: A [r, in] as is, B [out, r] with the q/k rows in
    llama.cpp's per-head order (the permutation its converter applies to the base q/k).
Our adapters are `x @ a @ b * alpha / r` with a [in, r] and b [r, out] (model.LoRA), so
A = a.T and B = b.T.
"""

import json
import pathlib

import gguf
import numpy as np
from safetensors.numpy import save_file

from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import names
from inversion_jax.train import checkpointing

FORMATS = ('peft', 'merged', 'gguf')
_PEFT_PREFIX = 'base_model.model.'


def adapters_from_tree(tree: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{our kernel name: (a [in, r], b [r, out])} from a LoRA pytree (nnx pure dict or as
  Orbax restores it without a target: string keys, leaves maybe wrapped in {'value': x})."""
  def leaf(node):
    return np.asarray(node['value'] if isinstance(node, dict) else node, np.float32)

  adapters = {}
  for layer, block in tree['layers'].items():
    for target, projection in block['attn'].items():
      lora = projection['lora']
      adapters[f'layers.{int(layer)}.attn.{target}.kernel'] = (leaf(lora['a']), leaf(lora['b']))
  return dict(sorted(adapters.items(), key=lambda item: _layer_order(item[0])))


def _layer_order(name: str):
  parts = name.split('.')
  return int(parts[1]), parts[3]


def _rank(adapters) -> int:
  return next(iter(adapters.values()))[0].shape[1]


def peft_config(adapters, alpha: float, dropout: float, base_model: str) -> dict:
  """adapter_config.json: PEFT's LoraConfig fields for plain LoRA on a causal LM."""
  targets = sorted({name.split('.')[3] for name in adapters})
  return {
      'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'base_model_name_or_path': base_model,
      'r': _rank(adapters), 'lora_alpha': alpha, 'lora_dropout': dropout,
      'target_modules': targets, 'bias': 'none', 'fan_in_fan_out': False,
      'use_rslora': False, 'use_dora': False, 'init_lora_weights': True,
      'inference_mode': True, 'modules_to_save': None, 'layers_to_transform': None,
  }


def peft_tensors(adapters) -> dict[str, np.ndarray]:
  """PEFT's state dict: A = a.T ([r, in]) and B = b.T ([out, r]) under the HF module name."""
  tensors = {}
  for ours, (a, b) in adapters.items():
    module = _PEFT_PREFIX + names.rename(ours, 'ours', 'hf').removesuffix('.weight')
    tensors[f'{module}.lora_A.weight'] = np.ascontiguousarray(a.T)
    tensors[f'{module}.lora_B.weight'] = np.ascontiguousarray(b.T)
  return tensors


def write_peft(directory, adapters, alpha: float, dropout: float, base_model: str):
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / 'adapter_config.json').write_text(
      json.dumps(peft_config(adapters, alpha, dropout, base_model), indent=2))
  save_file(peft_tensors(adapters), str(directory / 'adapter_model.safetensors'))


def merged_params(flat: dict[str, np.ndarray], adapters, alpha: float) -> dict[str, np.ndarray]:
  """Our flat parameters with every adapter folded in: kernel + a @ b * alpha / r (float32)."""
  scale = alpha / _rank(adapters)
  merged = dict(flat)
  for name, (a, b) in adapters.items():
    merged[name] = np.asarray(flat[name], np.float32) + (a @ b) * np.float32(scale)
  return merged


def hf_config(config: ModelConfig) -> dict:
  """config.json of a LlamaForCausalLM with `config`'s shape (hf_loader.config_from_hf's inverse)."""
  return {
      'architectures': ['LlamaForCausalLM'], 'model_type': 'llama',
      'vocab_size': config.vocab_size, 'num_hidden_layers': config.num_layers,
      'hidden_size': config.embed_dim, 'intermediate_size': config.hidden_dim,
      'num_attention_heads': config.num_heads, 'num_key_value_heads': config.num_kv_heads,
      'head_dim': config.head_dim, 'rope_theta': config.rope_theta,
      'rms_norm_eps': config.norm_eps, 'tie_word_embeddings': config.tie_embeddings,
      'max_position_embeddings': config.max_seq_len, 'bos_token_id': config.bos_token_id,
      'eos_token_id': list(config.eos_token_ids), 'hidden_act': 'silu',
      'attention_bias': False, 'mlp_bias': False, 'torch_dtype': 'float32',
  }


def hf_tensors(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Our flat parameters under HF names, Linear weights back to [out, in]."""
  tensors = {}
  for ours, array in flat.items():
    entry, _ = names.lookup(ours, 'ours')
    array = np.asarray(array, np.float32)
    tensors[names.rename(ours, 'ours', 'hf')] = np.ascontiguousarray(
        array.T if entry.transpose else array)
  return tensors


def write_merged(directory, config: ModelConfig, flat, adapters, alpha: float, tokenizer=None):
  """An HF checkpoint of the merged weights; with `tokenizer`, its tokenizer.json beside."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / 'config.json').write_text(json.dumps(hf_config(config), indent=2))
  save_file(hf_tensors(merged_params(flat, adapters, alpha)),
            str(directory / 'model.safetensors'), metadata={'format': 'pt'})
  if tokenizer is not None:
    write_tokenizer(directory, tokenizer)


def write_tokenizer(directory: pathlib.Path, tokenizer) -> None:
  """tokenizer.json (the Rust tokenizer we run) and the settings transformers reads."""
  tokenizer.backend.save(str(directory / 'tokenizer.json'))
  token = tokenizer.backend.id_to_token
  settings = {
      'tokenizer_class': 'PreTrainedTokenizerFast', 'add_bos_token': tokenizer.add_bos,
      'bos_token': None if tokenizer.bos_id is None else token(tokenizer.bos_id),
      'eos_token': token(tokenizer.eos_ids[0]), 'pad_token': token(tokenizer.pad_id),
  }
  if tokenizer.chat_template:
    settings['chat_template'] = tokenizer.chat_template
  (directory / 'tokenizer_config.json').write_text(json.dumps(settings, indent=2))
  (directory / 'generation_config.json').write_text(json.dumps(
      {'bos_token_id': tokenizer.bos_id, 'eos_token_id': list(tokenizer.eos_ids)}, indent=2))


def llama_cpp_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp's per-head row order of a q/k weight ([out, ...]); gguf_loader undoes it."""
  return (weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
          .swapaxes(1, 2)
          .reshape(weight.shape))


def gguf_tensors(adapters, config: ModelConfig) -> dict[str, np.ndarray]:
  """GGUF adapter tensors as convert_lora_to_gguf.py names and lays them out (float32)."""
  heads = {'q_proj': config.num_heads, 'k_proj': config.num_kv_heads}
  tensors = {}
  for ours, (a, b) in adapters.items():
    name = names.rename(ours, 'ours', 'gguf')
    lora_b = b.T
    target = ours.split('.')[3]
    if target in heads:
      lora_b = llama_cpp_rows(lora_b, heads[target])
    tensors[f'{name}.lora_a'] = np.ascontiguousarray(a.T)
    tensors[f'{name}.lora_b'] = np.ascontiguousarray(lora_b)
  return tensors


def write_gguf_adapter(path, adapters, alpha: float, config: ModelConfig, name: str = ''):
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = gguf.GGUFWriter(str(path), 'llama')
  writer.add_type(gguf.GGUFType.ADAPTER)
  writer.add_string(gguf.Keys.Adapter.TYPE, 'lora')
  writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
  if name:
    writer.add_name(name)
  for tensor_name, array in gguf_tensors(adapters, config).items():
    writer.add_tensor(tensor_name, array)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def read_run(workdir) -> dict:
  """The run's stored configuration (run_config.json), or a UserError naming what is missing."""
  workdir = pathlib.Path(workdir)
  path = workdir / checkpointing.RUN_CONFIG_FILE
  if not path.is_file():
    raise UserError(f'{workdir} is not a run directory (no {checkpointing.RUN_CONFIG_FILE}); '
                    'pass --workdir=<output>/<name> of a run with at least one saved round')
  try:
    return json.loads(path.read_text())
  except ValueError as error:
    raise UserError(f'cannot read {path} ({error})') from error


def round_adapters(workdir, round_index: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The adapters saved after round `round_index` of the run in `workdir`."""
  with checkpointing.RoundCheckpointer(workdir, read_run(workdir)) as checkpointer:
    return adapters_from_tree(checkpointer.restore_adapters(round_index))


def export_round(workdir, round_index: int, fmt: str, out=None, model_source=None):
  """Writes round `round_index`'s adapters of the run in `workdir` as `fmt`; returns the path.

  `out` defaults to <workdir>/export/round_<N>_<fmt>[.gguf]. `model_source` =
  (ModelConfig, flat params, tokenizer) skips loading the run's model again.
  """
  if fmt not in FORMATS:
    raise UserError(f'unknown --format {fmt!r}; choose one of {", ".join(FORMATS)}')
  workdir = pathlib.Path(workdir)
  run = read_run(workdir)
  adapters = round_adapters(workdir, round_index)
  default = workdir / 'export' / (f'round_{round_index}_{fmt}' + ('.gguf' if fmt == 'gguf' else ''))
  out = pathlib.Path(out) if out else default
  alpha = float(run['lora_alpha'])
  if fmt == 'peft':
    write_peft(out, adapters, alpha, float(run['lora_dropout']), str(run['model']))
    return out
  if model_source is None:
    from inversion_jax.nn.loading import registry  # pylint: disable=g-import-not-at-top
    model_source = registry.load_model_source(run['model'])
  config, flat, tokenizer = model_source
  if fmt == 'merged':
    write_merged(out, config, flat, adapters, alpha, tokenizer)
  else:
    write_gguf_adapter(out, adapters, alpha, config, name=f'{workdir.name} round {round_index}')
  return out
