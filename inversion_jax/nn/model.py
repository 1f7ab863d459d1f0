"""A Llama-family decoder in Flax NNX, driven through pure functions over split state.

Modules only hold parameters and say how they combine; everything that runs is a pure
function of `(graphdef, state, ...)` (see `forward`), so the same code is jitted, pmapped
and differentiated. Covers SmolLM2, TinyLlama, Llama 2/3 and Mistral-7B-v0.2.

Axis letters used in einsums throughout:
  B batch, T query tokens, S key slots of a row's cache, P shared-prefix slots,
  D embed, N query heads, K kv heads, G query heads per kv head (N = K * G), H head dim,
  F MLP hidden, V vocab.

Caching. A row's cache has S slots. Prompts are LEFT-padded so that every row writes
the same slot at each step (one in-place `dynamic_update_slice`, no scatter). Row b's
real tokens start at slot `key_start[b]`; a query in slot q may attend slots s with
`key_start[b] <= s <= q`. An optional shared prefix (few-shot examples) is prefilled
once into a `PrefixCache` of P slots with batch size 1; every row attends to all of it
(it precedes every row), and positions of row tokens continue after it:

  prefix  "Q: a A: b\n"            P = 4 slots, positions 0..3
  row 0   [pad pad  x   y ] z ...  key_start=2, slot 2 -> position 4 + 2 - 2 = 4
  row 1   [ u   v   w   x ] y ...  key_start=0, slot 2 -> position 4 + 2 - 0 = 6
"""

import contextlib
import contextvars
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from inversion_jax.nn.config import ModelConfig


class LayerCache(NamedTuple):
  """Keys [B, K, H, S] and values [B, K, S, H] of one layer; [K, H, P] and [K, P, H] for a prefix.

  Keys slots-last and values slots-major make both attention products plain row-major
  matmuls per (row, kv head), [M, H] x [H, S] and [M, S] x [S, H], which XLA hands to its
  fast matmul library without transposing the cache (BUILD_NOTES.md, "Cache layout").
  """

  k: jax.Array
  v: jax.Array


Cache = tuple[LayerCache, ...]


class PrefixCache(NamedTuple):
  """A prefilled shared prefix: one `LayerCache` per layer (no batch axis)."""

  layers: Cache

  @property
  def length(self) -> int:
    return self.layers[0].k.shape[-1]


# How `a` starts. he: He-uniform, U(+-sqrt(6 / in)); peft: PEFT's kaiming_uniform(a=sqrt(5))
# on its [r, in] weight, U(+-1 / sqrt(in)) -- sqrt(6) = 2.45x narrower.
LORA_INITS = {
    'he': nnx.initializers.he_uniform(),
    'peft': nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'),
}


class LoRA(nnx.Module):
  """Low-rank update `x @ a @ b * alpha / rank`; b starts at zero so training starts at the base."""

  def __init__(self, in_dim, out_dim, rank, alpha, dropout, *, rngs: nnx.Rngs, dtype,
               init: str = 'he'):
    init = LORA_INITS[init]
    self.a = nnx.LoRAParam(init(rngs.params(), (in_dim, rank), dtype))
    self.b = nnx.LoRAParam(jnp.zeros((rank, out_dim), dtype))
    self.scale = alpha / rank
    self.dropout = dropout

  def __call__(self, x, dropout_key):
    if dropout_key is not None and self.dropout > 0:
      # One key per row ([B] keys) or per token ([B, T] keys, training): a row's (a token's)
      # mask does not depend on the rows beside it, so any split of a batch over devices or
      # micro-batches, or any packing of examples into rows, draws the same masks.
      draw = lambda key, row: jax.random.bernoulli(key, 1.0 - self.dropout, row.shape)
      for _ in range(dropout_key.ndim):
        draw = jax.vmap(draw)
      keep = draw(dropout_key, x)
      x = jnp.where(keep, x / (1.0 - self.dropout), 0).astype(x.dtype)
    return (x @ self.a[...] @ self.b[...]) * jnp.asarray(self.scale, x.dtype)


class QuantScale(nnx.Variable):
  """Per-output-channel scales of an int8 kernel (not trained: not an `nnx.Param`)."""


class Linear(nnx.Module):
  """A bias-free projection with an optional LoRA adapter (set by `add_lora`) and an
  optional int8 weight-only kernel (set by `quantize.int8_weight_only`)."""

  def __init__(self, in_dim, out_dim, *, rngs: nnx.Rngs, dtype):
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (in_dim, out_dim), dtype))
    self.lora: LoRA | None = nnx.data(None)
    self.scale: QuantScale | None = nnx.data(None)

  def __call__(self, x, dropout_key=None):
    if self.scale is None:
      y = x @ self.kernel[...]
    else:  # x @ (q * s) = (x @ q) * s: the int8 -> compute-dtype convert feeds the matmul.
      y = (x @ self.kernel[...].astype(x.dtype)) * self.scale[...].astype(x.dtype)
    if self.lora is not None:
      y = y + self.lora(x, dropout_key)
    return y


class RMSNorm(nnx.Module):
  """Llama RMSNorm, computed in float32 whatever the parameter dtype."""

  def __init__(self, dim, eps, dtype):
    self.scale = nnx.Param(jnp.ones((dim,), dtype))
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class RopeTables(NamedTuple):
  """cos and signed sin [B, T, H] of every query position: shared by all layers' q and k."""

  cos: jax.Array
  sin: jax.Array


def rope_tables(positions, head_dim, theta) -> RopeTables:
  """The rotary tables of `positions` [B, T], in the rotate-half layout of HF Llama.

  Computed once per forward pass and handed to every layer: when each layer computed its
  own, XLA fused the sines and cosines into every consumer and evaluated them once per
  element of q and k: ~5% of a batch-64 CPU decode step's thread time (BUILD_NOTES.md).
  """
  half = head_dim // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  angles = positions.astype(jnp.float32)[:, :, None] * inv_freq  # [B, T, H/2]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  return RopeTables(jnp.concatenate([cos, cos], axis=-1), jnp.concatenate([-sin, sin], axis=-1))


def apply_rope(x, rope: RopeTables):
  """Rotary embedding of x [B, T, *, H] with the tables of its positions.

  The halves are swapped by reversing a size-2 axis rather than split and concatenated:
  XLA:CPU fuses the reversal into one elementwise loop, while the concatenation ran as
  slow scalar code (decode step 7% faster at batch 64, BUILD_NOTES.md).
  """
  half = x.shape[-1] // 2
  x32 = x.astype(jnp.float32)
  halves = x32.reshape(*x.shape[:-1], 2, half)
  swapped = jnp.flip(halves, axis=-2).reshape(x.shape)  # [x2, x1]
  cos, sin = rope.cos[:, :, None, :], rope.sin[:, :, None, :]
  return (x32 * cos + swapped * sin).astype(x.dtype)


# The platform code is being traced for; None: the process's default backend.
_PLATFORM = contextvars.ContextVar('compute_platform', default=None)


@contextlib.contextmanager
def compute_platform(platform: str):
  """Traces inside compile for `platform` (a backend sets its devices' platform): a
  program lowered on a CPU host for a TPU mesh must not take the CPU's workarounds."""
  token = _PLATFORM.set(platform)
  try:
    yield
  finally:
    _PLATFORM.reset(token)


def einsum_f32(spec, a, b):
  """`einsum` accumulating and returning float32 whatever the operands' dtype.

  XLA:CPU (jaxlib 0.11) has no kernel for some bf16 x bf16 -> f32 dots outside its
  matmul library ("Unsupported element type for DotThunk"), so on the CPU the operands
  are widened first; accelerators take the mixed-precision dot as it is. The platform is
  the one being compiled for (`compute_platform`), not the host's.
  """
  platform = _PLATFORM.get() or jax.default_backend()
  if a.dtype != jnp.float32 and platform == 'cpu':
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _fold(keys, index):
  """Per-row [B] or per-token [B, T] keys folded with `index` (a layer, a projection)."""
  if keys is None:
    return None
  flat = jax.vmap(lambda key: jax.random.fold_in(key, index))(keys.reshape(-1))
  return flat.reshape(keys.shape)


class Attention(nnx.Module):
  """Grouped-query attention with RoPE, a per-row cache and an optional shared prefix."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
    dtype = config.jnp_dtype
    self.q_proj = Linear(d, n * h, rngs=rngs, dtype=dtype)
    self.k_proj = Linear(d, k * h, rngs=rngs, dtype=dtype)
    self.v_proj = Linear(d, k * h, rngs=rngs, dtype=dtype)
    self.o_proj = Linear(n * h, d, rngs=rngs, dtype=dtype)
    self.num_heads, self.num_kv_heads, self.head_dim = n, k, h

  def __call__(self, x, rope, mask, cache, write_index, prefix, dropout_key):
    b, t, _ = x.shape
    k_heads, groups = self.num_kv_heads, self.num_heads // self.num_kv_heads
    q = self.q_proj(x, _fold(dropout_key, 0)).reshape(b, t, k_heads, groups, self.head_dim)
    k = self.k_proj(x, _fold(dropout_key, 1)).reshape(b, t, k_heads, self.head_dim)
    v = self.v_proj(x, _fold(dropout_key, 2)).reshape(b, t, k_heads, self.head_dim)
    q = apply_rope(q.reshape(b, t, -1, self.head_dim), rope)
    q = q.reshape(b, t, k_heads, groups, self.head_dim)
    k = apply_rope(k, rope).transpose(0, 2, 3, 1)  # [B, K, H, T]
    v = v.transpose(0, 2, 1, 3)  # [B, K, T, H]
    if cache is not None:
      keys = jax.lax.dynamic_update_slice_in_dim(cache.k, k, write_index, axis=3)
      values = jax.lax.dynamic_update_slice_in_dim(cache.v, v, write_index, axis=2)
      cache = LayerCache(keys, values)
    else:
      keys, values = k, v
    out = _attend(q, keys, values, mask, prefix)
    out = out.reshape(b, t, self.num_heads * self.head_dim)
    return self.o_proj(out, _fold(dropout_key, 3)), cache


def _attend(q, keys, values, mask, prefix: LayerCache | None):
  """Softmax attention over row slots plus (optionally) shared prefix slots, in float32.

  q [B, T, K, G, H]; keys [B, K, H, S]; values [B, K, S, H]; mask [B, T, S]. The G query
  heads of a kv head and the T queries are stacked into M = G * T rows, so each product
  is one matmul per (row, kv head). For decode (T = 1) the stacking is free; a batched
  dot over [B, S, K, H] instead first transposed the whole cache, every layer, every step.

  The prefix and row slots are two blocks of one softmax, never concatenated: a shared
  maximum, exp per block, one sum, and the division applied to the [M, H] output rather
  than to the [M, P + S] probabilities. In a prefill (M = 3 x 128 queries against ~300
  prefix slots) the elementwise work on the probabilities, not the matmuls, was most of the
  prefix's cost (BUILD_NOTES "Attention with a prefix").
  """
  b, t, k_heads, groups, h = q.shape
  m = groups * t
  query = q.transpose(0, 2, 3, 1, 4).reshape(b, k_heads, m, h)
  scale = h ** -0.5
  logits = einsum_f32('BKMH,BKHS->BKMS', query, keys)
  logits = logits.reshape(b, k_heads, groups, t, -1)
  logits = jnp.where(mask[:, None, None], logits * scale, -1e30).reshape(b, k_heads, m, -1)
  top = jnp.max(logits, axis=-1, keepdims=True)
  if prefix is not None:
    # The prefix block stays kv-head-major, [K, B * M, P]: one GEMM per kv head each way,
    # and only its [.., 1] and [.., H] reductions are brought back to [B, K, M, ..].
    to_rows = lambda x: x.reshape(k_heads, b, m, -1).transpose(1, 0, 2, 3)
    flat = query.transpose(1, 0, 2, 3).reshape(k_heads, b * m, h)
    prefix_logits = einsum_f32('KNH,KHP->KNP', flat, prefix.k) * scale
    top = jnp.maximum(top, to_rows(jnp.max(prefix_logits, axis=-1, keepdims=True)))
    prefix_weights = jnp.exp(prefix_logits - top.transpose(1, 0, 2, 3).reshape(k_heads, b * m, 1))
  weights = jnp.exp(logits - top)
  total = jnp.sum(weights, axis=-1, keepdims=True)
  out = einsum_f32('BKMS,BKSH->BKMH', weights.astype(values.dtype), values)
  if prefix is not None:
    total = total + to_rows(jnp.sum(prefix_weights, axis=-1, keepdims=True))
    out = out + to_rows(einsum_f32('KNP,KPH->KNH', prefix_weights.astype(values.dtype), prefix.v))
  out = (out / total).astype(values.dtype)
  return out.reshape(b, k_heads, groups, t, h).transpose(0, 3, 1, 2, 4)  # [B, T, K, G, H]


class MLP(nnx.Module):
  """SwiGLU feed-forward."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    d, f, dtype = config.embed_dim, config.hidden_dim, config.jnp_dtype
    self.gate_proj = Linear(d, f, rngs=rngs, dtype=dtype)
    self.up_proj = Linear(d, f, rngs=rngs, dtype=dtype)
    self.down_proj = Linear(f, d, rngs=rngs, dtype=dtype)

  def __call__(self, x):
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
  """Pre-norm decoder layer."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(config.embed_dim, config.norm_eps, config.jnp_dtype)
    self.attn = Attention(config, rngs=rngs)
    self.mlp_norm = RMSNorm(config.embed_dim, config.norm_eps, config.jnp_dtype)
    self.mlp = MLP(config, rngs=rngs)

  def __call__(self, x, rope, mask, cache, write_index, prefix, dropout_key):
    attn_out, cache = self.attn(
        self.attn_norm(x), rope, mask, cache, write_index, prefix, dropout_key
    )
    x = x + attn_out
    return x + self.mlp(self.mlp_norm(x)), cache


class Transformer(nnx.Module):
  """Token ids -> logits, optionally reading and writing a KV cache."""

  def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
    self.config = config
    init = nnx.initializers.normal(0.02)
    self.embed = nnx.Embed(
        config.vocab_size, config.embed_dim, dtype=config.jnp_dtype,
        param_dtype=config.jnp_dtype, embedding_init=init, rngs=rngs,
    )
    self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
    self.final_norm = RMSNorm(config.embed_dim, config.norm_eps, config.jnp_dtype)
    if not config.tie_embeddings:
      self.lm_head = Linear(config.embed_dim, config.vocab_size, rngs=rngs,
                            dtype=config.jnp_dtype)

  def __call__(self, tokens, positions, mask, cache=None, write_index=0, prefix=None,
               dropout_key=None, last_only=False, hidden_layers=()):
    x = self.embed(tokens)
    hidden = {0: x} if 0 in hidden_layers else {}
    rope = rope_tables(positions, self.config.head_dim, self.config.rope_theta)
    new_cache = []
    for index, layer in enumerate(self.layers):
      layer_cache = None if cache is None else cache[index]
      layer_prefix = None if prefix is None else prefix.layers[index]
      x, layer_cache = layer(x, rope, mask, layer_cache, write_index, layer_prefix,
                             _fold(dropout_key, index))
      new_cache.append(layer_cache)
      if index + 1 in hidden_layers:
        hidden[index + 1] = x
    if last_only:
      x = x[:, -1:]
    logits = self.head(x)
    return Output(logits, None if cache is None else tuple(new_cache),
                  tuple(hidden[layer] for layer in hidden_layers))

  def head(self, x):
    """Final norm then the LM head: float32 logits of hidden states x [..., D]."""
    x = self.final_norm(x)
    if self.config.tie_embeddings:
      return einsum_f32('...D,VD->...V', x, self.embed.embedding[...])
    return einsum_f32('...D,DV->...V', x, self.lm_head.kernel[...])


def attention_mask(key_start, num_queries, num_slots, write_index=0):
  """[B, T, S] mask: query t sits in slot write_index + t and sees key_start[b] <= s <= it."""
  slots = jnp.arange(num_slots)[None, None, :]
  query_slots = write_index + jnp.arange(num_queries)[None, :, None]
  return (slots <= query_slots) & (slots >= key_start[:, None, None])


class Output(NamedTuple):
  """What a forward pass returns (gemma's shape).

  logits: [B, T (1 with last_only), V] float32.
  cache: the updated cache, or None without one.
  hidden_states: one [B, T, D] array per requested layer, in the order asked: layer 0 is
    the embeddings, layer l the output of block l, layer `num_layers` the final norm's
    input.
  """

  logits: jax.Array
  cache: Cache | None
  hidden_states: tuple = ()


def forward(graphdef, state, tokens, positions, key_start=None, cache=None, write_index=0,
            prefix=None, dropout_key=None, last_only=False, hidden_layers=(),
            segment_ids=None) -> Output:
  """Pure forward pass: logits, updated cache (or None) and requested hidden states.

  `hidden_layers` is a static tuple of layer indices (see `Output`). `segment_ids` [B, T]
  (no cache): a token attends only to earlier tokens of its own segment, so several
  sequences packed into one row (training) do not see each other.

  `state` is one `nnx.State`, or a tuple of states that together make the model (e.g.
  LoRA params and frozen base params while training). Without a cache the keys are the tokens themselves (training, scoring); with one, the
  tokens are written at `write_index` and attend to every earlier slot of their row.
  """
  batch, num_queries = tokens.shape
  if key_start is None:
    key_start = jnp.zeros((batch,), jnp.int32)
  num_slots = num_queries if cache is None else cache[0].k.shape[-1]
  mask = attention_mask(key_start, num_queries, num_slots, write_index)
  if segment_ids is not None:
    mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
  model = nnx.merge(graphdef, *state) if isinstance(state, tuple) else nnx.merge(graphdef, state)
  for layer in hidden_layers:
    if not 0 <= layer <= model.config.num_layers:
      raise ValueError(f'hidden layer {layer} outside 0..{model.config.num_layers}')
  return model(tokens, positions, mask, cache, write_index, prefix, dropout_key, last_only,
               tuple(hidden_layers))


def lm_head(graphdef, state, hidden):
  """The model's final norm + LM head on hidden states (the logit lens): [..., V]."""
  model = nnx.merge(graphdef, *state) if isinstance(state, tuple) else nnx.merge(graphdef, state)
  return model.head(hidden)


def model_config(graphdef, state) -> ModelConfig:
  """The config held by the model (static: free under jit)."""
  return nnx.merge(graphdef, state).config


def init_cache(config: ModelConfig, batch: int, num_slots: int) -> Cache:
  """Zeroed per-row cache of `num_slots` slots for every layer."""
  keys = (batch, config.num_kv_heads, config.head_dim, num_slots)
  values = (batch, config.num_kv_heads, num_slots, config.head_dim)
  dtype = config.jnp_dtype
  return tuple(LayerCache(jnp.zeros(keys, dtype), jnp.zeros(values, dtype))
               for _ in range(config.num_layers))


def create(config: ModelConfig, seed: int = 0) -> tuple[nnx.GraphDef, nnx.State]:
  """A randomly initialised model, split into (graphdef, state)."""
  return nnx.split(Transformer(config, rngs=nnx.Rngs(seed)))


def from_flat_params(config: ModelConfig, flat, place=None):
  """Builds (graphdef, state) from loader output (dotted names -> arrays or lazy tensors).

  The model is created abstractly (no random init), then every parameter is filled from
  `flat`, one tensor at a time in the config's dtype; missing or unexpected names and
  shape mismatches raise with the names listed. `place(path, leaf)` gives a parameter's
  sharding (`MeshBackend.param_sharding`): each device then reads only its own slice of
  the tensor (`jax.make_array_from_callback`), and no tensor is ever whole on one
  device; without it (or where it gives None) the default device holds it.
  """
  abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(state))
  names = ['.'.join(str(_key_name(k)) for k in path) for path, _ in leaves]
  missing = sorted(set(names) - set(flat))
  unexpected = sorted(set(flat) - set(names))
  if missing or unexpected:
    raise ValueError(f'parameter names differ: missing {missing[:5]}, unexpected {unexpected[:5]}')
  dtype = config.jnp_dtype
  values = []
  for name, (path, leaf) in zip(names, leaves):
    tensor = flat[name]
    if tuple(tensor.shape) != tuple(leaf.shape):
      raise ValueError(f'{name}: shape {tensor.shape} does not fit the model ({leaf.shape})')
    sharding = place(path, leaf) if place is not None else None
    if isinstance(tensor, jax.Array):  # Already on a device (random weights of a shape).
      tensor = jnp.asarray(tensor, dtype)
      values.append(tensor if sharding is None else jax.device_put(tensor, sharding))
    elif sharding is None:
      values.append(jnp.asarray(np.asarray(tensor[...], dtype)))
    else:
      values.append(jax.make_array_from_callback(
          tuple(leaf.shape), sharding, lambda index, t=tensor: np.asarray(t[index], dtype)))
  nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, values))
  return graphdef, state


def to_flat_params(state) -> dict[str, np.ndarray]:
  """The inverse of `from_flat_params`: dotted names -> numpy arrays."""
  return {'.'.join(map(str, path)): np.asarray(leaf) for path, leaf in _flat_items(state)}


def _flat_items(state):
  pure = nnx.to_pure_dict(state)
  leaves = jax.tree_util.tree_flatten_with_path(pure)[0]
  return [(tuple(_key_name(k) for k in path), leaf) for path, leaf in leaves]


def _key_name(key):
  for attr in ('key', 'idx', 'name'):
    if hasattr(key, attr):
      return getattr(key, attr)
  return str(key)
