"""One table from checkpoint tensor names (HF, GGUF) to our flat parameter names.

Both loaders go through this table so the two formats cannot drift apart. Our layout is the
contract with the Flax model: dotted names, float32, and Linear kernels stored [in, out], the
transpose of the [out, in] weights HF and GGUF store. `{i}` in a template is the layer index.
"""

import dataclasses
import re

import numpy as np

from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class ParamName:
  """Where one of our parameters lives in each checkpoint format."""

  ours: str
  hf: str
  gguf: str
  transpose: bool  # Linear weights: [out, in] in the checkpoint, [in, out] for us.


PARAM_NAMES = (
    ParamName('embed.embedding', 'model.embed_tokens.weight', 'token_embd.weight', False),
    ParamName('final_norm.scale', 'model.norm.weight', 'output_norm.weight', False),
    ParamName('lm_head.kernel', 'lm_head.weight', 'output.weight', True),
    ParamName('layers.{i}.attn_norm.scale', 'model.layers.{i}.input_layernorm.weight',
              'blk.{i}.attn_norm.weight', False),
    ParamName('layers.{i}.attn.q_proj.kernel', 'model.layers.{i}.self_attn.q_proj.weight',
              'blk.{i}.attn_q.weight', True),
    ParamName('layers.{i}.attn.k_proj.kernel', 'model.layers.{i}.self_attn.k_proj.weight',
              'blk.{i}.attn_k.weight', True),
    ParamName('layers.{i}.attn.v_proj.kernel', 'model.layers.{i}.self_attn.v_proj.weight',
              'blk.{i}.attn_v.weight', True),
    ParamName('layers.{i}.attn.o_proj.kernel', 'model.layers.{i}.self_attn.o_proj.weight',
              'blk.{i}.attn_output.weight', True),
    ParamName('layers.{i}.mlp_norm.scale', 'model.layers.{i}.post_attention_layernorm.weight',
              'blk.{i}.ffn_norm.weight', False),
    ParamName('layers.{i}.mlp.gate_proj.kernel', 'model.layers.{i}.mlp.gate_proj.weight',
              'blk.{i}.ffn_gate.weight', True),
    ParamName('layers.{i}.mlp.up_proj.kernel', 'model.layers.{i}.mlp.up_proj.weight',
              'blk.{i}.ffn_up.weight', True),
    ParamName('layers.{i}.mlp.down_proj.kernel', 'model.layers.{i}.mlp.down_proj.weight',
              'blk.{i}.ffn_down.weight', True),
)


def _pattern(template: str) -> re.Pattern:
  return re.compile(re.escape(template).replace(r'\{i\}', r'(\d+)') + '$')


_PATTERNS = {
    fmt: [(_pattern(getattr(entry, fmt)), entry) for entry in PARAM_NAMES]
    for fmt in ('ours', 'hf', 'gguf')
}


def lookup(name: str, fmt: str) -> tuple[ParamName, str] | None:
  """The table entry for a tensor named in format `fmt`, and its layer index ('' if global)."""
  for pattern, entry in _PATTERNS[fmt]:
    match = pattern.match(name)
    if match:
      return entry, (match.group(1) if match.groups() else '')
  return None


def rename(name: str, source_fmt: str, target_fmt: str) -> str | None:
  """Translates a tensor name between formats; None if the table does not know it."""
  found = lookup(name, source_fmt)
  if found is None:
    return None
  entry, layer = found
  return getattr(entry, target_fmt).replace('{i}', layer)


class LazyTensor:
  """One checkpoint tensor in our layout, read from its file only when indexed.

  `t[...]` reads it whole, `t[index]` (a tuple of slices, as `jax.make_array_from_callback`
  asks for a device's shard) only that part; the values keep the checkpoint's dtype
  (`dtype`), so loading casts each piece straight to the model's dtype and a 7B model is
  never held as float32 on the host. `read(index)` gets slices in OUR layout.
  """

  def __init__(self, shape, dtype, read):
    self.shape, self.dtype, self._read = tuple(shape), np.dtype(dtype), read

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __getitem__(self, index) -> np.ndarray:
    return np.asarray(self._read(_as_slices(index, self.ndim)))

  def __array__(self, dtype=None, copy=None):
    del copy
    array = self[...]
    return array if dtype is None else array.astype(dtype)


def _as_slices(index, ndim: int) -> tuple:
  """An index (Ellipsis, slices, a tuple of them) as one slice per axis."""
  index = index if isinstance(index, tuple) else (index,)
  if any(i is Ellipsis for i in index):
    at = next(j for j, i in enumerate(index) if i is Ellipsis)
    index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1:]
  return tuple(index) + (slice(None),) * (ndim - len(index))


def to_ours(array: np.ndarray, entry: ParamName) -> np.ndarray:
  """A checkpoint tensor as our float32 array, transposing Linear weights to [in, out]."""
  array = np.asarray(array, dtype=np.float32)
  return np.ascontiguousarray(array.T) if entry.transpose else array


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every parameter the model needs for `config`, with its shape."""
  d, f, v = config.embed_dim, config.hidden_dim, config.vocab_size
  q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
  shapes = {'embed.embedding': (v, d), 'final_norm.scale': (d,)}
  if not config.tie_embeddings:
    shapes['lm_head.kernel'] = (d, v)
  per_layer = {
      'attn_norm.scale': (d,), 'attn.q_proj.kernel': (d, q), 'attn.k_proj.kernel': (d, kv),
      'attn.v_proj.kernel': (d, kv), 'attn.o_proj.kernel': (q, d), 'mlp_norm.scale': (d,),
      'mlp.gate_proj.kernel': (d, f), 'mlp.up_proj.kernel': (d, f),
      'mlp.down_proj.kernel': (f, d),
  }
  for i in range(config.num_layers):
    shapes.update({f'layers.{i}.{key}': shape for key, shape in per_layer.items()})
  return shapes


def check_params(config: ModelConfig, params: dict[str, np.ndarray], source: str) -> None:
  """Fails loudly when a checkpoint does not match its own config, before the model sees it."""
  expected = expected_shapes(config)
  missing = sorted(set(expected) - set(params))
  extra = sorted(set(params) - set(expected))
  if missing:
    raise UserError(f'{source} lacks tensors {missing[:3]} (and {max(len(missing) - 3, 0)} '
                    'more); the checkpoint is incomplete: re-download or re-convert it')
  if extra:
    raise UserError(f'{source} has tensors {extra[:3]} beyond its config '
                    f'({config.num_layers} layers); the checkpoint and its config disagree')
  for name, shape in expected.items():
    if tuple(params[name].shape) != shape:
      raise UserError(f'{source}: tensor {name} has shape {tuple(params[name].shape)}, the '
                      f'config implies {shape}; the checkpoint and its config disagree')
