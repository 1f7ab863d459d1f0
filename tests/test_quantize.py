"""Int8 weight-only projections: the error bound, logits close to float32, the generator path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inversion_jax.decode import generation, sampling
from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib
from inversion_jax.nn import quantize
from inversion_jax.nn.config import ModelConfig
from tests.tiny import ByteTokenizer


def test_per_channel_error_is_at_most_half_a_step():
  kernel = jax.random.normal(jax.random.key(0), (64, 48)) * jnp.linspace(0.01, 3.0, 48)
  values, scale = quantize.quantize_kernel(kernel)
  assert values.dtype == jnp.int8 and scale.shape == (48,)
  error = jnp.abs(values.astype(jnp.float32) * scale - kernel)
  assert bool(jnp.all(error <= scale / 2 + 1e-7))
  assert int(jnp.max(jnp.abs(values))) == 127  # Every column uses its whole range.


@pytest.mark.slow
def test_int8_logits_are_close_and_the_weights_are_int8():
  graphdef, state = model_lib.create(ModelConfig.tiny(), seed=3)
  qgraph, qstate = quantize.int8_weight_only(graphdef, state)
  kernels = [x for path, x in jax.tree_util.tree_leaves_with_path(qstate)
             if 'q_proj' in jax.tree_util.keystr(path) and 'kernel' in jax.tree_util.keystr(path)]
  assert kernels and all(k.dtype == jnp.int8 for k in kernels)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 200, (2, 12)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
  full = model_lib.forward(graphdef, state, tokens, positions).logits
  quant = model_lib.forward(qgraph, qstate, tokens, positions).logits
  relative = float(jnp.linalg.norm(quant - full) / jnp.linalg.norm(full))
  assert 0 < relative < 0.02, relative


@pytest.mark.slow
def test_generator_int8_path_generates_and_requantizes_new_weights():
  graphdef, state = model_lib.create(ModelConfig.tiny(), seed=3)
  plain = generation.Generator(graphdef, state, ByteTokenizer(), show_progress=False)
  int8 = generation.Generator(graphdef, state, ByteTokenizer(), show_progress=False,
                              quantize='int8')
  prompts = [('Q: ', f'row {i}\nA:') for i in range(4)]
  greedy = sampling.SamplingConfig(0.0, 8)
  a, b = plain.generate(prompts, greedy), int8.generate(prompts, greedy)
  assert len(b.texts) == 4 and sum(x == y for x, y in zip(a.texts, b.texts)) >= 2
  again = int8.with_state(state)  # New (merged) weights are quantized too.
  assert again.generate(prompts, greedy).texts == b.texts
  with pytest.raises(UserError, match='quantize'):
    quantize.check('int4')
