"""Tensor-parallel (Megatron-style) placement of a Llama's weights on the mesh's 'model' axis.

Column-parallel: q, k, v, gate and up kernels [in, out] split their outputs (whole heads
per device), so attention and the MLP's activation run locally; row-parallel: o and
down kernels split their inputs, and XLA adds one all-reduce after each. The embedding
(and an untied LM head) split the vocabulary. Norms and LoRA adapters (small) are
replicated; int8 scales follow their kernel's output split. Rows stay on 'data'.
"""

from jax.sharding import PartitionSpec as P

from inversion_jax.errors import UserError

COLUMN = frozenset({'q_proj', 'k_proj', 'v_proj', 'gate_proj', 'up_proj', 'lm_head'})
ROW = frozenset({'o_proj', 'down_proj'})


def _names(path) -> list[str]:
  return [str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path]


def tensor_parallel_spec(path, leaf) -> P:
  """The PartitionSpec of one weight, from its path in the model's state."""
  names = _names(path)
  ndim = getattr(leaf, 'ndim', 0)
  if 'lora' in names or ndim == 0:
    return P()
  owner = next((n for n in reversed(names) if n in COLUMN | ROW | {'embed'}), None)
  if owner == 'embed' and 'embedding' in names:
    return P('model', None)
  if owner in COLUMN:
    return P(None, 'model') if 'kernel' in names else P('model')  # kernel [in, out] / scale [out]
  if owner in ROW and 'kernel' in names:
    return P('model', None)
  return P()


def check_divisible(config, model: int) -> None:
  """UserError naming the first model dimension the 'model' axis does not divide."""
  if config is None:
    raise ValueError('sharding the weights needs the model config')
  for name in ('num_heads', 'num_kv_heads', 'hidden_dim', 'vocab_size'):
    value = getattr(config, name)
    if value % model:
      raise UserError(f'--shard_params: the model\'s {name}={value} is not divisible by the '
                      f'model axis of {model} devices; choose --model_axis to divide it '
                      f'(or run without --shard_params)')


def output_spec(path, leaf) -> P:
  """Where a generator call's output lives: KV caches split by row on 'data' and by kv
  head on 'model' (as the column-parallel k/v projections make them), a shared prefix's
  cache by kv head only, scalars everywhere, anything else by row (its first axis)."""
  names = _names(path)
  ndim = getattr(leaf, 'ndim', 0)
  if ndim == 0:
    return P()
  if names and names[-1] in ('k', 'v'):  # LayerCache: [B, K, ...] or a prefix's [K, ...].
    return P('data', 'model') if ndim == 4 else P('model')
  return P('data')


def fitting_spec(spec: P, shape, mesh) -> P:
  """`spec` with every axis the mesh does not divide evenly left whole (replicated)."""
  parts = []
  for size, part in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = () if part is None else (part,) if isinstance(part, str) else tuple(part)
    shards = 1
    for name in names:
      shards *= mesh.shape[name]
    parts.append(part if shards and size % shards == 0 else None)
  return P(*parts)
