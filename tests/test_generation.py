"""Sampler and text generator: stops, padding, prefixes, pmap, sampling options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inversion_jax.decode import generation
from inversion_jax.decode import sampling
from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from tests.tiny import ByteTokenizer

GREEDY = sampling.SamplingConfig(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope='module')
def tiny_model():
  return model_lib.create(ModelConfig.tiny(), seed=7)


def make_generator(tiny_model, **kw):
  graphdef, state = tiny_model
  return generation.Generator(graphdef, state, ByteTokenizer(), show_progress=False, **kw)


def reference_greedy(tiny_model, prompt_ids, steps, stop_mask):
  """Greedy decoding by repeated full forward passes (no cache, no left padding).

  The sequence is right-padded to a fixed width so one compiled forward serves every
  step: causal attention keeps later padding from touching earlier logits.
  """
  graphdef, state = tiny_model
  width = 64
  forward = jax.jit(model_lib.forward, static_argnums=0)
  ids = list(prompt_ids)
  out = []
  for _ in range(steps):
    padded = jnp.asarray([ids + [0] * (width - len(ids))])
    logits, _, _ = forward(graphdef, state, padded, jnp.arange(width)[None])
    token = int(jnp.argmax(logits[0, len(ids) - 1]))
    if stop_mask[token]:
      break
    out.append(token)
    ids.append(token)
  return out


def test_batch_of_mixed_lengths_matches_one_by_one(tiny_model):
  gen = make_generator(tiny_model, stop_strings=())
  prompts = [('', 'a'), ('', 'hello world'), ('', 'nmap -sV 10.0.0.5 and more text')]
  batched = gen.generate(prompts, GREEDY)
  tok = ByteTokenizer()
  stop = np.asarray(gen.stop_mask)
  for (_, suffix), text, count in zip(prompts, batched.texts, batched.num_tokens):
    expected = reference_greedy(tiny_model, tok.encode(suffix, add_bos=True), 12, stop)
    assert count == len(expected)
    assert text == tok.decode(expected)


def test_shared_prefix_equals_full_prompt(tiny_model):
  gen = make_generator(tiny_model, stop_strings=())
  prefix = 'Example: nmap -p 80 host\n'
  with_prefix = gen.generate([(prefix, 'Task: x'), (prefix, 'Task: longer one')], GREEDY)
  tok = ByteTokenizer()
  stop = np.asarray(gen.stop_mask)
  for suffix, text in zip(['Task: x', 'Task: longer one'], with_prefix.texts):
    ids = tok.encode(prefix, add_bos=True) + tok.encode(suffix)
    assert text == tok.decode(reference_greedy(tiny_model, ids, 12, stop))


def test_rows_stop_at_stop_tokens(tiny_model):
  gen = make_generator(tiny_model, stop_strings=())
  free = gen.generate([('', 'abc')], GREEDY).texts[0]
  assert len(free) >= 2
  stopper = free[1]  # The second generated character becomes a stop string.
  stopped = make_generator(tiny_model, stop_strings=(stopper,)).generate([('', 'abc')], GREEDY)
  assert stopped.texts[0] == free[: free.index(stopper)]
  assert stopper not in stopped.texts[0]


def test_loop_ends_when_all_rows_stop(tiny_model):
  graphdef, state = tiny_model
  config = ModelConfig.tiny()
  everything_stops = jnp.ones((config.vocab_size,), bool)
  out = sampling.jit_generate(graphdef, state, jnp.array([[5, 6], [7, 8]]),
                              jnp.zeros((2,), jnp.int32), jax.random.key(0), everything_stops,
                              spec=sampling.DecodeSpec(GREEDY, 0))
  assert out.lengths.tolist() == [0, 0]
  assert int(out.tokens.sum()) == 0


@pytest.mark.slow
def test_pmap_four_devices_equals_one(tiny_model):
  assert jax.local_device_count() == 4, 'conftest sets 4 fake CPU devices'
  prompts = [('Prefix: ', f'task number {i}' * (i % 3 + 1)) for i in range(10)]
  one = make_generator(tiny_model, stop_strings=()).generate(prompts, GREEDY)
  four = make_generator(tiny_model, stop_strings=(), num_devices=4).generate(prompts, GREEDY)
  assert one == four
  logits_one = make_generator(tiny_model).last_token_logits(prompts)
  logits_four = make_generator(tiny_model, num_devices=4).last_token_logits(prompts)
  np.testing.assert_allclose(logits_one, logits_four, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_sampling_is_seeded_and_varies(tiny_model):
  gen = make_generator(tiny_model, stop_strings=())
  hot = sampling.SamplingConfig(temperature=1.5, max_new_tokens=10, top_k=50, top_p=0.95)
  prompts = [('', 'same prompt')] * 8
  first = gen.generate(prompts, hot, seed=1)
  assert first == gen.generate(prompts, hot, seed=1)
  assert len(set(first.texts)) > 1


def test_top_k_one_is_greedy():
  logits = jax.random.normal(jax.random.key(0), (4, 50))
  greedy = sampling.pick_tokens(logits, jax.random.key(1), GREEDY)
  top1 = sampling.pick_tokens(logits, jax.random.key(1),
                              sampling.SamplingConfig(temperature=1.0, top_k=1))
  tiny_p = sampling.pick_tokens(logits, jax.random.key(1),
                                sampling.SamplingConfig(temperature=1.0, top_p=1e-6))
  np.testing.assert_array_equal(greedy, top1)
  np.testing.assert_array_equal(greedy, tiny_p)


def test_prompt_longer_than_context_is_a_user_error(tiny_model):
  gen = make_generator(tiny_model)
  with pytest.raises(UserError, match='context'):
    gen.generate([('', 'x' * 600)], GREEDY)


SAMPLED = sampling.SamplingConfig(temperature=1.0, max_new_tokens=24)


LONG = sampling.SamplingConfig(temperature=1.0, max_new_tokens=100)  # The cache grows twice.


@pytest.mark.parametrize('config', [GREEDY, SAMPLED, sampling.SamplingConfig(
    temperature=0.8, max_new_tokens=40, top_k=20), LONG])
@pytest.mark.slow
def test_compacting_decode_gives_the_plain_loop_tokens(tiny_model, config):
  """Row compaction (finished rows dropped every k steps, the cache grown from 32 empty
  slots as the steps need them) changes cost, not tokens."""
  prompts = [('Head: ', f'row {i} ' + 'x' * (i % 5)) for i in range(21)]
  stops = tuple('h+_bQ')  # Bytes this random model emits now and then: rows end at different steps.
  plain = make_generator(tiny_model, compact_every=0, stop_strings=stops).generate(
      prompts, config, seed=3)
  for every, rows in ((1, 32), (3, 8), (8, 32), (8, 8)):  # prefill_rows=8: parts of a wave.
    compact = make_generator(tiny_model, compact_every=every, stop_strings=stops,
                             max_batch=32, prefill_rows=rows).generate(prompts, config, seed=3)
    assert compact.texts == plain.texts and compact.num_tokens == plain.num_tokens
  assert len(set(plain.num_tokens)) > 1  # Rows stopped at different steps.
  if config is LONG:
    assert max(plain.num_tokens) > 64  # Rows ran past two growths of the cache.


@pytest.mark.slow
def test_samples_do_not_depend_on_max_batch_or_devices(tiny_model):
  prompts = [('', f'prompt {i}') for i in range(19)]
  reference = make_generator(tiny_model, max_batch=64).generate(prompts, SAMPLED, seed=5)
  for kwargs in (dict(max_batch=8), dict(max_batch=16, compact_every=0),
                 dict(max_batch=16, prefill_rows=8),
                 dict(num_devices=min(4, jax.local_device_count()), max_batch=16)):
    other = make_generator(tiny_model, **kwargs).generate(prompts, SAMPLED, seed=5)
    assert other.texts == reference.texts, kwargs
  assert make_generator(tiny_model).generate(prompts, SAMPLED, seed=6).texts != reference.texts


@pytest.mark.parametrize('vocab, chunk', [(1024, 256), (300, 16), (2000, 128)])
@pytest.mark.slow
def test_inverse_cdf_draws_follow_the_softmax(vocab, chunk):
  """40k draws are as close to softmax(logits) as `jax.random.categorical`'s; masked
  (-inf) tokens and chunks never come up. A 10 % temperature error fails this test."""
  logits = jax.random.normal(jax.random.key(vocab), (vocab,)) * 2.0
  logits = logits.at[::3].set(-jnp.inf)  # Zero mass, inside and across chunks.
  logits = logits.at[: 2 * chunk].set(-jnp.inf)  # Whole chunks without mass.
  draws = 40_000
  keys = sampling.row_keys(jax.random.key(3), draws)
  many = lambda l: jnp.broadcast_to(l, (draws, vocab))
  ours = jax.jit(lambda l, k: sampling.sample_categorical(many(l), k, chunk))(logits, keys)
  theirs = jax.jit(lambda l, k: jax.vmap(jax.random.categorical)(k, many(l)))(logits, keys)
  probs = np.asarray(jax.nn.softmax(logits))
  distance = lambda picks: 0.5 * np.abs(np.bincount(picks, minlength=vocab) / draws - probs).sum()
  assert np.bincount(np.asarray(ours), minlength=vocab)[probs == 0].sum() == 0
  assert distance(np.asarray(ours)) < 1.25 * distance(np.asarray(theirs)) + 0.005


@pytest.mark.parametrize('config', [GREEDY, SAMPLED])
def test_a_wider_decode_cache_gives_the_same_tokens(tiny_model, config):
  """Prompts prefilled at their own width, then placed at the end of a wider cache
  (`DecodeSpec.prompt_slots`, one decode program for many widths), decode the same tokens."""
  graphdef, state = tiny_model
  tokens = jnp.asarray([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 9, 10]], jnp.int32)
  key_start = jnp.asarray([2, 0, 4], jnp.int32)
  prefix = sampling.jit_prefill_prefix(graphdef, state, jnp.asarray([1, 40, 41, 42], jnp.int32))
  stop = jnp.zeros((ModelConfig.tiny().vocab_size,), bool).at[ord('e')].set(True)
  run = lambda width: sampling.jit_generate(
      graphdef, state, tokens, key_start, jax.random.key(4), stop, prefix=prefix,
      spec=sampling.DecodeSpec(config, 0, prompt_slots=width))
  same, wider = run(None), run(6 + 13)
  np.testing.assert_array_equal(same.tokens, wider.tokens)
  np.testing.assert_array_equal(same.lengths, wider.lengths)
  assert int(same.lengths.sum()) > 6  # Rows did decode several tokens.
