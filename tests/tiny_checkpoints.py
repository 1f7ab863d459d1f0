"""Writers for tiny GGUF and HF checkpoints, so loader tests need no downloads.

Weights are generated in HF's layout ([out, in] Linear weights, rotate-half q/k rows); the GGUF
writer applies llama.cpp's q/k permutation itself (copied from convert_hf_to_gguf.py), so a
loader that forgets to undo it fails the round trip.
"""

import json

import gguf
import numpy as np
from safetensors.numpy import save_file

from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import names

# Divisible by 32 where Q8_0 / Q4_0 need whole blocks along the input axis.
QUANT_CONFIG = ModelConfig(
    vocab_size=67, num_layers=2, embed_dim=64, hidden_dim=96, num_heads=4, num_kv_heads=2,
    head_dim=16, rope_theta=50_000.0, norm_eps=1e-6, tie_embeddings=False, max_seq_len=128,
    bos_token_id=1, eos_token_ids=(2,))


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's printable spelling of each byte, the alphabet of byte-level BPE vocabularies."""
  printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
               *range(ord('®'), ord('ÿ') + 1)]
  codes, extra = list(printable), 0
  for byte in range(256):
    if byte not in printable:
      printable.append(byte)
      codes.append(256 + extra)
      extra += 1
  return {byte: chr(code) for byte, code in zip(printable, codes)}


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's LlamaModel.permute: rotate-half rows -> interleaved pairs, per head."""
  return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
          .swapaxes(1, 2)
          .reshape(weights.shape))


def random_hf_weights(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
  """HF-named float32 tensors in HF's layout for `config`."""
  rng = np.random.default_rng(seed)
  weights = {}
  for ours, shape in names.expected_shapes(config).items():
    entry, _ = names.lookup(ours, 'ours')
    shape = shape[::-1] if entry.transpose else shape
    weights[names.rename(ours, 'ours', 'hf')] = rng.standard_normal(shape).astype(np.float32)
  return weights


def tiny_vocab() -> tuple[list[str], list[int], list[str]]:
  """Specials, the 256 byte symbols and a few merges (incl. 'Ġ 1', which digit splitting bans)."""
  specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>']
  tokens = specials + list(bytes_to_unicode().values())
  merges = ['h e', 'l l', 'he ll', 'hell o', 'Ġ w', 'Ġ 1', '1 2']
  tokens += [m.replace(' ', '') for m in merges]
  types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
  return tokens, types, merges


def add_tokenizer(writer: gguf.GGUFWriter, *, model: str = 'gpt2', pre: str = 'smollm',
                  template: str | None = None) -> None:
  tokens, types, merges = tiny_vocab()
  writer.add_tokenizer_model(model)
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(tokens)
  writer.add_token_types(types)
  writer.add_token_merges(merges)
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  if template:
    writer.add_chat_template(template)


def write_gguf(path, config: ModelConfig, weights: dict[str, np.ndarray], *,
               qtypes: dict[str, gguf.GGMLQuantizationType] | None = None,
               arch: str = 'llama', skip_keys: tuple[str, ...] = (), tokenizer: bool = True,
               raw: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]] | None = None,
               **tokenizer_args) -> None:
  """A llama.cpp-style GGUF of `weights` (HF names/layout).

  `qtypes` maps GGUF names to storage types; `raw` adds pre-encoded tensors (GGUF name ->
  (bytes, type)) as they are.
  """
  writer = gguf.GGUFWriter(str(path), arch)
  keys = {
      'block_count': lambda: writer.add_block_count(config.num_layers),
      'context_length': lambda: writer.add_context_length(config.max_seq_len),
      'embedding_length': lambda: writer.add_embedding_length(config.embed_dim),
      'feed_forward_length': lambda: writer.add_feed_forward_length(config.hidden_dim),
      'head_count': lambda: writer.add_head_count(config.num_heads),
      'head_count_kv': lambda: writer.add_head_count_kv(config.num_kv_heads),
      'rope_freq_base': lambda: writer.add_rope_freq_base(config.rope_theta),
      'rms_eps': lambda: writer.add_layer_norm_rms_eps(config.norm_eps),
  }
  for key, add in keys.items():
    if key not in skip_keys:
      add()
  if tokenizer:
    add_tokenizer(writer, **tokenizer_args)
  for hf_name, array in weights.items():
    name = names.rename(hf_name, 'hf', 'gguf') or hf_name
    if name.endswith('attn_q.weight'):
      array = llama_cpp_permute(array, config.num_heads)
    elif name.endswith('attn_k.weight'):
      array = llama_cpp_permute(array, config.num_kv_heads)
    qtype = (qtypes or {}).get(name)
    if qtype is None:
      writer.add_tensor(name, np.ascontiguousarray(array))
    elif qtype == gguf.GGMLQuantizationType.F16:
      writer.add_tensor(name, array.astype(np.float16))
    else:
      writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
  for name, (data, qtype) in (raw or {}).items():
    writer.add_tensor(name, data, raw_dtype=qtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def hf_config_json(config: ModelConfig, **overrides) -> dict:
  values = dict(
      architectures=['LlamaForCausalLM'], model_type='llama', vocab_size=config.vocab_size,
      num_hidden_layers=config.num_layers, hidden_size=config.embed_dim,
      intermediate_size=config.hidden_dim, num_attention_heads=config.num_heads,
      num_key_value_heads=config.num_kv_heads, rope_theta=config.rope_theta,
      rms_norm_eps=config.norm_eps, tie_word_embeddings=config.tie_embeddings,
      max_position_embeddings=config.max_seq_len, bos_token_id=config.bos_token_id,
      eos_token_id=list(config.eos_token_ids), hidden_act='silu')
  return values | overrides


def write_hf_dir(path, config: ModelConfig, weights: dict[str, np.ndarray], *,
                 shards: int = 1, **config_overrides) -> None:
  """config.json plus model.safetensors, or `shards` files with an index."""
  path.mkdir(parents=True, exist_ok=True)
  (path / 'config.json').write_text(json.dumps(hf_config_json(config, **config_overrides)))
  if shards == 1:
    save_file(weights, str(path / 'model.safetensors'))
    return
  keys = sorted(weights)
  weight_map = {}
  for shard in range(shards):
    filename = f'model-{shard + 1:05d}-of-{shards:05d}.safetensors'
    part = {k: weights[k] for k in keys[shard::shards]}
    save_file(part, str(path / filename))
    weight_map |= {k: filename for k in part}
  index = {'metadata': {}, 'weight_map': weight_map}
  (path / 'model.safetensors.index.json').write_text(json.dumps(index))
