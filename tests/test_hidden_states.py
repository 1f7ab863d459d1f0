"""Hidden states out of the model: forward's Output, Generator.embed, logit-lens fidelity."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inversion_jax.decode import generation
from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from tests.tiny import ByteTokenizer


@pytest.fixture(scope='module')
def tiny_model():
  return model_lib.create(ModelConfig.tiny(), seed=3)


def make_generator(tiny_model, **kw):
  graphdef, state = tiny_model
  return generation.Generator(graphdef, state, ByteTokenizer(), show_progress=False, **kw)


@pytest.mark.slow
def test_forward_returns_requested_layers_and_lens_of_last_layer_is_the_logits(tiny_model):
  graphdef, state = tiny_model
  config = model_lib.model_config(graphdef, state)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 200, (2, 9)))
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  out = model_lib.forward(graphdef, state, tokens, positions,
                          hidden_layers=(0, 1, config.num_layers))
  assert len(out.hidden_states) == 3
  chex.assert_shape(out.hidden_states, (2, 9, config.embed_dim))
  chex.assert_trees_all_close(out.hidden_states[0], model_lib.forward(
      graphdef, state, tokens, positions, hidden_layers=(0,)).hidden_states[0])
  lens = model_lib.lm_head(graphdef, state, out.hidden_states[-1])
  chex.assert_trees_all_close(lens, out.logits, rtol=1e-5, atol=1e-5)
  jitted = jax.jit(model_lib.forward, static_argnames=('graphdef', 'hidden_layers'))(
      graphdef, state, tokens, positions, hidden_layers=(1,))
  chex.assert_trees_all_close(jitted.hidden_states[0], out.hidden_states[1], rtol=1e-5,
                              atol=1e-6)
  with pytest.raises(ValueError, match='outside'):
    model_lib.forward(graphdef, state, tokens, positions, hidden_layers=(99,))


def direct_embedding(tiny_model, text, layer):
  graphdef, state = tiny_model
  ids = ByteTokenizer().encode(text, add_bos=True)
  out = model_lib.forward(graphdef, state, jnp.asarray([ids]), jnp.arange(len(ids))[None],
                          hidden_layers=(layer,))
  return np.asarray(out.hidden_states[0][0, 1:]).mean(0)  # Without BOS.


@pytest.mark.slow
def test_embed_mean_pools_real_tokens_on_one_and_four_devices(tiny_model):
  texts = ['nmap -sV 10.0.0.1', 'nc -lvnp 4444', 'gobuster dir -u http://a.lan -w x.txt']
  expected = np.stack([direct_embedding(tiny_model, t, 1) for t in texts])
  one = make_generator(tiny_model).embed(texts, layer=1)
  np.testing.assert_allclose(one, expected, rtol=1e-4, atol=1e-5)
  if jax.local_device_count() >= 4:
    four = make_generator(tiny_model, num_devices=4).embed(texts, layer=1)
    np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)
  with pytest.raises(UserError, match='outside the model'):
    make_generator(tiny_model).embed(texts, layer=17)


def direct_fidelity(tiny_model, prefix, suffix, completion, layer, k):
  graphdef, state = tiny_model
  tok = ByteTokenizer()
  head = tok.encode(prefix, add_bos=True) + tok.encode(suffix)
  tail = tok.encode(' ' + completion)
  ids = head + tail
  out = model_lib.forward(graphdef, state, jnp.asarray([ids]), jnp.arange(len(ids))[None],
                          hidden_layers=(layer,))
  logits = np.asarray(model_lib.lm_head(graphdef, state, out.hidden_states[0]))[0]
  hits = []
  for position in range(len(head), len(ids)):
    row = logits[position - 1]
    hits.append(row[ids[position]] >= np.sort(row)[-k])
  return float(np.mean(hits))


@pytest.mark.parametrize('layer,k', [(2, 5), (1, 40)])
@pytest.mark.slow
def test_fidelity_equals_a_direct_computation_from_logits(tiny_model, layer, k):
  prefix = 'Write the command.\n\n'
  rows = [('Tool: nmap\nTask: scan\nCommand:', 'nmap -sV x'),
          ('Tool: nc\nTask: listen on 4444\nCommand:', 'nc -l 4444'),
          ('Tool: dirb\nTask: dirs\nCommand:', 'dirb http://a.lan')]
  expected = [direct_fidelity(tiny_model, prefix, s, c, layer, k) for s, c in rows]
  prompts = [(prefix, s) for s, _ in rows]
  got = make_generator(tiny_model).fidelity(prompts, [c for _, c in rows], layer, k)
  np.testing.assert_allclose(got, expected, atol=1e-9)
  if jax.local_device_count() >= 4:
    four = make_generator(tiny_model, num_devices=4).fidelity(
        prompts, [c for _, c in rows], layer, k)
    np.testing.assert_allclose(four, got, atol=1e-9)
  with pytest.raises(UserError, match='k must be'):
    make_generator(tiny_model).fidelity(prompts, ['x'] * 3, layer, 0)
