"""Int8 weight-only quantization of the transformer blocks' projections, for generation.

Each `Linear` kernel [in, out] becomes int8 values q and float32 scales s per output
channel, s = max|w| / 127 over the column, q = round(w / s): |w - q s| <= s / 2. The
matmul runs on the int8 values converted to the activations' dtype and multiplies the
output by s (`model.Linear`), so a decode step reads a quarter of float32's weight bytes (half
of bfloat16's) where it is bandwidth-bound. Embeddings, norms and the LM head stay as they
were. Training never sees this: generation quantizes the merged weights it is given.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib

MODES = ('none', 'int8')


def check(mode: str) -> str:
  if mode not in MODES:
    raise UserError(f'unknown --quantize {mode!r}; choose one of {", ".join(MODES)}')
  return mode


def quantize_kernel(kernel):
  """(int8 values, float32 per-output-channel scales) of a [in, out] kernel."""
  kernel = jnp.asarray(kernel, jnp.float32)
  scale = jnp.max(jnp.abs(kernel), axis=0) / 127.0
  scale = jnp.where(scale > 0, scale, 1.0)
  values = jnp.clip(jnp.round(kernel / scale), -127, 127).astype(jnp.int8)
  return values, scale


def int8_weight_only(graphdef, state):
  """(graphdef, state) of the same model with every block projection in int8."""
  model = nnx.merge(graphdef, state)
  for block in model.layers:
    for linear in _projections(block):
      if linear.lora is not None:
        raise ValueError('quantize merged weights: fold the LoRA adapters in first')
      values, scale = quantize_kernel(linear.kernel[...])
      linear.kernel = nnx.Param(values)
      linear.scale = model_lib.QuantScale(scale)
  return nnx.split(model)


def apply(mode: str, graphdef, state):
  """`int8_weight_only` for 'int8', the inputs unchanged for 'none'; on abstract weights
  (`jax.ShapeDtypeStruct`s, for compiling without them) the abstract int8 model."""
  if check(mode) != 'int8':
    return graphdef, state
  if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state)):
    return nnx.split(nnx.eval_shape(lambda s: nnx.merge(*int8_weight_only(graphdef, s)), state))
  return int8_weight_only(graphdef, state)


def _projections(block):
  attn, mlp = block.attn, block.mlp
  return (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj,
          mlp.down_proj)
