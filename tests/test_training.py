"""LoRA and the train step: masking, learning, pmap equality, accumulation, NaN stop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from inversion_jax.train import training
from tests.tiny import examples, tiny_lora


@pytest.mark.slow
def test_lora_starts_as_identity_and_only_adapters_are_trainable():
  base_graphdef, base_state = model_lib.create(ModelConfig.tiny(), seed=0)
  graphdef, lora, base = tiny_lora()
  # rank 4 on q, k, v, o of 2 layers: a is [in, 4], b is [4, out].
  assert lora_lib.num_params(lora) == 2 * 4 * ((48 + 48) + (48 + 16) + (48 + 16) + (48 + 48))
  paths = jax.tree_util.tree_flatten_with_path(lora)[0]
  assert all('lora' in jax.tree_util.keystr(path) for path, _ in paths)
  assert lora_lib.num_params(base) == lora_lib.num_params(base_state)
  tokens = jnp.arange(10)[None] + 3
  positions = jnp.arange(10)[None]
  plain, _, _ = model_lib.forward(base_graphdef, base_state, tokens, positions)
  adapted, _, _ = model_lib.forward(graphdef, (lora, base), tokens, positions)
  np.testing.assert_allclose(plain, adapted, rtol=1e-6, atol=1e-6)


def test_padding_and_prompt_tokens_carry_no_loss():
  rows = examples(2)
  _, targets, weights, *_ = training.batch_arrays(rows, 3, 64, completion_only=False, pad_id=0)
  lengths = [len(e.prompt) + len(e.completion) - 1 for e in rows]
  assert weights.sum(1).tolist() == [lengths[0], lengths[1], 0]
  only = training.batch_arrays(rows, 3, 64, completion_only=True, pad_id=0).weights
  assert only.sum(1).tolist() == [len(e.completion) for e in rows] + [0]
  # The first weighted target with completion_only is the first completion token.
  first = int(np.argmax(only[0]))
  assert targets[0, first] == rows[0].completion[0]


@pytest.mark.slow
def test_padding_does_not_change_the_loss():
  graphdef, lora, base = tiny_lora()
  rows = examples(2)
  short = training.batch_arrays(rows, 2, 48, False, 0)
  long = training.batch_arrays(rows, 4, 96, False, 0)
  a = training.loss_sums(lora, base, graphdef, short, None)
  b = training.loss_sums(lora, base, graphdef, long, None)
  np.testing.assert_allclose(a[0] / a[1], b[0] / b[1], rtol=1e-5)


def test_packed_rows_hold_each_example_whole_with_its_own_positions():
  rows = examples(3)
  lengths = training.example_lengths(rows)
  packed = training.pack_arrays(rows, 1, 192, completion_only=True, pad_id=0)
  plain = training.batch_arrays(rows, 3, 64, completion_only=True, pad_id=0)
  start = 0
  for i, n in enumerate(lengths):
    part = slice(start, start + n)
    for name in ('inputs', 'targets', 'weights', 'positions'):
      np.testing.assert_array_equal(getattr(packed, name)[0, part], getattr(plain, name)[i, :n])
    assert (packed.segments[0, part] == i).all() and (packed.examples[0, part] == i).all()
    start += n
  assert (packed.segments[0, start:] == -1).all() and packed.weights[0, start:].sum() == 0
  two = training.pack_arrays(rows, 2, 96, completion_only=False, pad_id=0)
  assert two.examples[0].max() == 1 and set(two.examples[1, :lengths[2]]) == {2}


@pytest.mark.parametrize('dropout', [0.0, 0.3])
@pytest.mark.slow
def test_packed_and_unpacked_steps_give_the_same_loss_and_gradients(dropout):
  """Block-diagonal attention, per-example positions and per-token dropout keys: packing
  four examples into one row changes only the float summation order (measured: the same
  loss, gradient sums within 9e-7 of each leaf's largest entry; asserted to 1e-5)."""
  graphdef, lora, base = tiny_lora(dropout)
  lora = jax.tree.map(lambda x: x + 0.05, lora)  # b != 0, so the adapters matter.
  rows = [examples(8)[i] for i in (0, 3, 5, 7)]
  rows[1] = training.Example(rows[1].prompt, rows[1].completion + (5, 6, 7, 8, 9))  # Lengths differ.
  key = jax.random.key(3)
  grad_fn = jax.value_and_grad(training.loss_sums, has_aux=True)

  def sums(arrays):
    arrays = training.Rows(*map(jnp.asarray, arrays))
    keys = training.token_keys(key, arrays) if dropout else None
    return grad_fn(lora, base, graphdef, arrays, keys)

  (loss_a, count_a), grads_a = sums(training.batch_arrays(rows, 4, 64, False, 0))
  (loss_b, count_b), grads_b = sums(training.pack_arrays(rows, 1, 192, False, 0))
  (loss_c, count_c), grads_c = sums(training.pack_arrays(rows, 2, 128, False, 0))
  assert float(count_a) == float(count_b) == float(count_c) == sum(training.example_lengths(rows))
  np.testing.assert_allclose([float(loss_b), float(loss_c)], float(loss_a), rtol=1e-5)
  for a, b, c in zip(*map(jax.tree.leaves, (grads_a, grads_b, grads_c))):
    scale = float(np.abs(a).max())  # Gradient sums cancel: compare to the leaf's largest.
    assert float(np.abs(b - a).max()) <= 1e-5 * scale and float(np.abs(c - a).max()) <= 1e-5 * scale
  if dropout:  # The check would hold trivially if dropout did nothing.
    (plain, _), _ = grad_fn(lora, base, graphdef,
                            training.Rows(*map(jnp.asarray, training.batch_arrays(
                                rows, 4, 64, False, 0))), None)
    assert abs(float(plain) - float(loss_a)) > 1e-3


@pytest.mark.parametrize('dropout', [0.0, 0.3])
def test_packed_and_unpacked_trainers_give_the_same_updates(dropout):
  """Whole runs, 10 examples in batches of 4 (the last one short), 2 epochs."""
  graphdef, lora, base = tiny_lora(dropout)
  results = []
  for pack in (False, True):
    config = training.TrainConfig(learning_rate=1e-2, batch_size=4, epochs=2, pack=pack)
    trainer = training.Trainer(graphdef, base, config, show_progress=False)
    results.append(trainer.run(lora, trainer.init_opt_state(lora), examples(10), seed=1))
  unpacked, packed = results
  np.testing.assert_allclose(packed.losses, unpacked.losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(packed.lora), jax.tree.leaves(unpacked.lora)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert packed.new_shapes >= 1 and packed.new_shape_seconds > 0


def test_training_lowers_the_loss():
  graphdef, lora, base = tiny_lora()
  config = training.TrainConfig(learning_rate=1e-2, batch_size=4, epochs=5)
  trainer = training.Trainer(graphdef, base, config, show_progress=False)
  result = trainer.run(lora, trainer.init_opt_state(lora), examples(8), seed=0)
  assert len(result.losses) == 10
  assert result.losses[-1] < 0.7 * result.losses[0]
  assert not np.allclose(jax.tree.leaves(result.lora)[1], 0)


@pytest.mark.parametrize('num_devices,micro', [(4, None), (1, 1), (2, 1)])
@pytest.mark.slow
def test_devices_and_accumulation_match_one_device(num_devices, micro):
  """Same updates on 4 devices, or with accumulation, as one device (f32 sum order: 1e-5)."""
  graphdef, lora, base = tiny_lora()
  config = training.TrainConfig(learning_rate=1e-2, batch_size=4)
  reference = training.Trainer(graphdef, base, config, show_progress=False)
  expected = reference.run(lora, reference.init_opt_state(lora), examples(8), seed=3)
  other = training.Trainer(graphdef, base, training.TrainConfig(
      learning_rate=1e-2, batch_size=4, micro_batch_size=micro), num_devices=num_devices,
      show_progress=False)
  got = other.run(lora, other.init_opt_state(lora), examples(8), seed=3)
  np.testing.assert_allclose(got.losses, expected.losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got.lora), jax.tree.leaves(expected.lora)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_nan_loss_stops_training():
  graphdef, lora, base = tiny_lora()
  lora = jax.tree.map(lambda x: x * jnp.nan, lora)
  trainer = training.Trainer(graphdef, base, training.TrainConfig(), show_progress=False)
  with pytest.raises(training.NonFiniteLoss):
    trainer.run(lora, trainer.init_opt_state(lora), examples(4), seed=0)


def test_merged_adapters_equal_base_plus_lora():
  config = ModelConfig.tiny()
  plain_graphdef, plain_state = model_lib.create(config, seed=0)
  lora_config = lora_lib.LoRAConfig(rank=4, dropout=0.0)
  graphdef, state = lora_lib.add_lora(plain_graphdef, plain_state, lora_config)
  graphdef, lora, base = lora_lib.split_lora(graphdef, state)
  lora = jax.tree.map(lambda x: x + 0.05, lora)  # Non-zero b, so the update matters.
  merged = lora_lib.merge_into_base(lora, base, lora_config, plain_state)
  tokens = jnp.arange(12)[None] + 3
  positions = jnp.arange(12)[None]
  expected, _, _ = model_lib.forward(graphdef, (lora, base), tokens, positions)
  got, _, _ = model_lib.forward(plain_graphdef, merged, tokens, positions)
  untouched, _, _ = model_lib.forward(plain_graphdef, plain_state, tokens, positions)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  assert np.abs(np.asarray(untouched) - np.asarray(expected)).max() > 1e-3


def test_bfloat16_training_keeps_float32_master_adapters():
  """Like HF's mixed precision: bf16 base and compute, f32 adapters and loss."""
  graphdef, state = model_lib.create(ModelConfig.tiny(dtype='bfloat16'), seed=0)
  graphdef, state = lora_lib.add_lora(graphdef, state, lora_lib.LoRAConfig(rank=4, dropout=0.0))
  graphdef, lora, base = lora_lib.split_lora(graphdef, state)
  assert training.compute_dtype(base) == jnp.bfloat16
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(lora))
  trainer = training.Trainer(graphdef, base, training.TrainConfig(learning_rate=1e-2),
                             show_progress=False)
  result = trainer.run(lora, trainer.init_opt_state(lora), examples(8), seed=0)
  assert all(np.isfinite(result.losses)) and result.losses[-1] < result.losses[0]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(result.lora))
