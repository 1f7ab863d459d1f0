"""Model: parity with transformers' LlamaForCausalLM, cache-vs-full-forward, bf16, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inversion_jax.decode import sampling
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')


def hf_llama(config: ModelConfig, seed=0):
  """A transformers Llama with random weights of our config's shape."""
  hf_config = transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.embed_dim,
      intermediate_size=config.hidden_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, rope_theta=config.rope_theta, rms_norm_eps=config.norm_eps,
      tie_word_embeddings=config.tie_embeddings, max_position_embeddings=config.max_seq_len,
      attn_implementation='eager',
  )
  torch.manual_seed(seed)
  hf = transformers.LlamaForCausalLM(hf_config).eval()
  with torch.no_grad():  # Random norms so a missing or misplaced scale shows.
    for name, param in hf.named_parameters():
      if name.endswith('norm.weight'):
        param.copy_(1.0 + 0.1 * torch.randn_like(param))
  return hf


def our_params_from_hf(hf, config: ModelConfig):
  """Independent re-statement of the HF -> ours mapping (kernels are [in, out])."""
  sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
  flat = {'embed.embedding': sd['model.embed_tokens.weight'],
          'final_norm.scale': sd['model.norm.weight']}
  for i in range(config.num_layers):
    p = f'model.layers.{i}.'
    flat[f'layers.{i}.attn_norm.scale'] = sd[p + 'input_layernorm.weight']
    flat[f'layers.{i}.mlp_norm.scale'] = sd[p + 'post_attention_layernorm.weight']
    for proj in ('q', 'k', 'v', 'o'):
      flat[f'layers.{i}.attn.{proj}_proj.kernel'] = sd[p + f'self_attn.{proj}_proj.weight'].T
    for proj in ('gate', 'up', 'down'):
      flat[f'layers.{i}.mlp.{proj}_proj.kernel'] = sd[p + f'mlp.{proj}_proj.weight'].T
  if not config.tie_embeddings:
    flat['lm_head.kernel'] = sd['lm_head.weight'].T
  return flat


@pytest.mark.parametrize('tie', [True, False])
def test_logits_match_transformers(tie):
  config = ModelConfig.tiny(tie_embeddings=tie, rope_theta=1e5)
  hf = hf_llama(config)
  graphdef, state = model_lib.from_flat_params(config, our_params_from_hf(hf, config))
  tokens = np.random.default_rng(0).integers(0, config.vocab_size, (3, 17))
  with torch.no_grad():
    expected = hf(torch.tensor(tokens)).logits.numpy()
  positions = np.broadcast_to(np.arange(17), (3, 17))
  ours = jax.jit(model_lib.forward, static_argnums=0)(graphdef, state, tokens, positions).logits
  rel = np.abs(np.asarray(ours) - expected).max() / np.abs(expected).max()
  assert rel < 1e-4, rel


@pytest.mark.slow
def test_left_padding_matches_unpadded():
  """A left-padded row gives the logits of the same row without padding."""
  config = ModelConfig.tiny()
  graphdef, state = model_lib.create(config)
  tokens = jnp.array([[5, 6, 7, 8, 9]])
  full, _, _ = model_lib.forward(graphdef, state, tokens, jnp.arange(5)[None])
  padded = jnp.array([[0, 0, 5, 6, 7, 8, 9]])
  positions = jnp.maximum(jnp.arange(7)[None] - 2, 0)
  out, _, _ = model_lib.forward(graphdef, state, padded, positions, key_start=jnp.array([2]))
  np.testing.assert_allclose(out[:, 2:], full, rtol=1e-5, atol=1e-5)


def test_cached_decode_equals_full_forward():
  """20 greedy cached decode steps give the logits of one full forward pass."""
  config = ModelConfig.tiny()
  graphdef, state = model_lib.create(config, seed=3)
  prompt = jnp.array([[3, 14, 15, 92, 65]])
  gen = sampling.jit_generate(
      graphdef, state, prompt, jnp.zeros((1,), jnp.int32), jax.random.key(0),
      jnp.zeros((config.vocab_size,), bool),
      spec=sampling.DecodeSpec(sampling.SamplingConfig(temperature=0.0, max_new_tokens=20), 0))
  assert int(gen.lengths[0]) == 20
  sequence = jnp.concatenate([prompt, gen.tokens], axis=1)
  logits, _, _ = model_lib.forward(graphdef, state, sequence, jnp.arange(25)[None])
  np.testing.assert_array_equal(jnp.argmax(logits[0, 4:24], -1), gen.tokens[0])


@pytest.mark.slow
def test_prefix_cache_equals_full_prompt():
  """Attending a prefilled shared prefix equals running prefix + suffix together."""
  config = ModelConfig.tiny()
  graphdef, state = model_lib.create(config, seed=1)
  prefix = jnp.array([11, 12, 13, 14])
  suffix = jnp.array([[21, 22, 23], [0, 31, 32]])  # Row 1 is left-padded by one.
  key_start = jnp.array([0, 1])
  cached = sampling.prefill_prefix(graphdef, state, prefix)
  positions = jnp.maximum(4 + jnp.arange(3)[None] - key_start[:, None], 0)
  ours = sampling.jit_forward(graphdef, state, suffix, positions, key_start, cached, False)
  for row, start in enumerate([0, 1]):
    sequence = jnp.concatenate([prefix, suffix[row, start:]])[None]
    full, _, _ = model_lib.forward(graphdef, state, sequence, jnp.arange(sequence.shape[1])[None])
    np.testing.assert_allclose(ours[row, start:], full[0, 4:], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_bfloat16_close_to_float32():
  config = ModelConfig.tiny()
  graphdef, state = model_lib.create(config)
  flat = model_lib.to_flat_params(state)
  g16, s16 = model_lib.from_flat_params(config.replace(dtype='bfloat16'), flat)
  tokens = jnp.arange(12)[None] + 3
  f32, _, _ = model_lib.forward(graphdef, state, tokens, jnp.arange(12)[None])
  b16, _, _ = model_lib.forward(g16, s16, tokens, jnp.arange(12)[None])
  assert b16.dtype == jnp.float32
  assert jnp.abs(f32 - b16).max() / jnp.abs(f32).max() < 0.05


@pytest.mark.slow
def test_causal_at_every_position():
  """Changing the token at position t changes the logits from t on and none before t."""
  config = ModelConfig.tiny()
  graphdef, state = model_lib.create(config)
  tokens = jnp.arange(8)[None] + 3
  positions = jnp.arange(8)[None]
  logits = lambda t: model_lib.forward(graphdef, state, t, positions)[0]
  reference = logits(tokens)
  for t in range(tokens.shape[1]):
    changed = logits(tokens.at[0, t].set(1))
    assert jnp.array_equal(changed[0, :t], reference[0, :t]), t
    assert not jnp.allclose(changed[0, t], reference[0, t]), t


def test_bad_parameter_names_raise():
  config = ModelConfig.tiny()
  flat = model_lib.to_flat_params(model_lib.create(config)[1])
  flat.pop('final_norm.scale')
  with pytest.raises(ValueError, match='final_norm.scale'):
    model_lib.from_flat_params(config, flat)
