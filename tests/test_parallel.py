"""The device seam: one device, pmap and mesh (data only, and with tensor-parallel weights)
give the same commands, scores and train steps on 4 fake CPU devices; bad settings fail
with one line.

Tolerances: greedy tokens and sampled tokens must be equal (per-row keys); logits and
embeddings to 1e-4 relative (float32 sums in another order); train-step losses to 1e-5
and adapters to 1e-4 / 1e-6 absolute, as in test_training.
"""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from inversion_jax import parallel
from inversion_jax.decode import generation
from inversion_jax.decode.sampling import SamplingConfig
from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from inversion_jax.parallel import distributed
from inversion_jax.parallel import sharding
from inversion_jax.train import training
from tests.tiny import ByteTokenizer, examples, tiny_lora

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Sizes the model axis of 2 divides: 6 heads, 2 kv heads, MLP 88, vocab 264.
CONFIG = ModelConfig.tiny(vocab_size=264)
SETUPS = {
    'one device': dict(kind='pmap', num_devices=1),
    'pmap x4': dict(kind='pmap', num_devices=4),
    'mesh data x4': dict(kind='mesh', num_devices=4),
    'mesh data x2, model x2': dict(kind='mesh', num_devices=4, shard_params=True, model_axis=2),
    'mesh model x4 (vocab, heads /2 only)': None,  # Refused: see test_bad_model_axis.
}
RUN_SETUPS = {k: v for k, v in SETUPS.items() if v}
PROMPTS = [('Tool: nmap\nTask: ', f'scan host {i}\nCommand:') for i in range(11)] + [
    ('', 'a lone prompt')]


def backend(setup):
  return parallel.make_backend(**setup, model_config=CONFIG)


@pytest.fixture(scope='module')
def tiny_model():
  return model_lib.create(CONFIG, seed=7)


def make_generator(tiny_model, setup, **kw):
  graphdef, state = tiny_model
  return generation.Generator(graphdef, state, ByteTokenizer(), show_progress=False,
                              backend=backend(setup), **kw)


@pytest.fixture(scope='module')
def reference(tiny_model):
  gen = make_generator(tiny_model, SETUPS['one device'], max_batch=8)
  return dict(
      greedy=gen.generate(PROMPTS, SamplingConfig(0.0, 12)).texts,
      sampled=gen.generate(PROMPTS, SamplingConfig(1.0, 12), seed=5).texts,
      logits=gen.last_token_logits(PROMPTS),
      embed=gen.embed([p[1] for p in PROMPTS], layer=2),
      fidelity=gen.fidelity(PROMPTS, [' nmap -sV x'] * len(PROMPTS), layer=1, k=5))


@pytest.mark.parametrize('name', list(RUN_SETUPS))
@pytest.mark.slow
def test_every_backend_gives_the_same_rows(tiny_model, reference, name):
  gen = make_generator(tiny_model, RUN_SETUPS[name], max_batch=16)
  assert gen.generate(PROMPTS, SamplingConfig(0.0, 12)).texts == reference['greedy']
  # Per-row keys: sampled rows depend on the seed and the row only, not on the backend,
  # the device count or --max_batch (8 above, 16 here).
  assert gen.generate(PROMPTS, SamplingConfig(1.0, 12), seed=5).texts == reference['sampled']
  np.testing.assert_allclose(gen.last_token_logits(PROMPTS), reference['logits'], rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(gen.embed([p[1] for p in PROMPTS], layer=2), reference['embed'],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      gen.fidelity(PROMPTS, [' nmap -sV x'] * len(PROMPTS), layer=1, k=5),
      reference['fidelity'])


def test_sharded_weights_are_split_on_the_model_axis(tiny_model):
  gen = make_generator(tiny_model, SETUPS['mesh data x2, model x2'])
  layer = gen.state['layers'][0]
  q = layer['attn']['q_proj']['kernel'][...]
  o = layer['attn']['o_proj']['kernel'][...]
  assert q.sharding.spec == P(None, 'model') and o.sharding.spec == P('model', None)
  assert q.addressable_shards[0].data.shape == (48, 24)  # 6 heads x 8 over 2 devices.
  embedding = gen.state['embed']['embedding'][...]
  assert embedding.sharding.spec == P('model', None)
  assert gen.state['final_norm']['scale'][...].sharding.spec == P()


def train(setup, micro=None, batch_size=4):
  graphdef, lora, base = tiny_lora(0.3, CONFIG)  # Dropout on: its masks must not move.
  config = training.TrainConfig(learning_rate=1e-2, batch_size=batch_size,
                                micro_batch_size=micro)
  trainer = training.Trainer(graphdef, base, config, show_progress=False, backend=backend(setup))
  return trainer.run(lora, trainer.init_opt_state(lora), examples(8), seed=3)


@pytest.mark.parametrize('name,micro', [(name, None) for name in list(RUN_SETUPS)[1:]]
                         + [('one device', 1), ('mesh data x2, model x2', 1)])
@pytest.mark.slow
def test_train_steps_match_one_device_with_dropout(name, micro):
  expected = train(SETUPS['one device'])
  got = train(RUN_SETUPS[name], micro)
  np.testing.assert_allclose(got.losses, expected.losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got.lora), jax.tree.leaves(expected.lora)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def assert_same_training(got, expected):
  np.testing.assert_allclose(got.losses, expected.losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(got.lora), jax.tree.leaves(expected.lora)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_a_batch_the_shards_do_not_divide_pads_with_weightless_rows():
  """2 or 3 rows a batch on 4 data shards: padded to 4 with rows of zero weight, the
  same loss and adapters as one device (examples(8): batches of 3, 3, 2 rows too)."""
  for batch_size in (2, 3):
    assert_same_training(train(dict(kind='mesh', num_devices=4), batch_size=batch_size),
                         train(SETUPS['one device'], batch_size=batch_size))


EIGHT_DEVICES = """
import jax
from tests.test_parallel import SETUPS, assert_same_training, train
assert jax.device_count() == 8
for setup in (dict(kind='mesh', num_devices=8),
              dict(kind='mesh', num_devices=8, shard_params=True, model_axis=2)):
  assert_same_training(train(setup), train(SETUPS['one device']))  # 4 rows on 8 or 4 shards.
print('same')
"""


@pytest.mark.slow
def test_the_original_batch_of_four_on_eight_devices():
  """README's pod commands: batch 4 on 8 data shards (8 fake CPU devices, own process)."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  done = subprocess.run([sys.executable, '-c', EIGHT_DEVICES], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0 and done.stdout.strip() == 'same', done.stderr[-2000:]


@pytest.mark.slow
def test_dropout_changes_the_loss_row_by_row():
  """The check above would hold trivially if dropout did nothing; and a row's mask is its
  own: the same row alone or beside another gives the same loss."""
  graphdef, lora, base = tiny_lora(0.3, CONFIG)
  lora = jax.tree.map(lambda x: x + 0.05, lora)  # b != 0, so the adapters matter.
  rows = training.batch_arrays(examples(2), 2, 32, False, 0)
  keys = training.token_keys(jax.random.key(0), rows)
  dropped = training.loss_sums(lora, base, graphdef, rows, keys)
  plain = training.loss_sums(lora, base, graphdef, rows, None)
  assert abs(float(dropped[0]) - float(plain[0])) > 1e-3
  part = lambda s: training.Rows(*(a[s] for a in rows))
  second = training.loss_sums(lora, base, graphdef, part(slice(1, None)), keys[1:])
  first = training.loss_sums(lora, base, graphdef, part(slice(None, 1)), keys[:1])
  np.testing.assert_allclose(float(first[0]) + float(second[0]), float(dropped[0]), rtol=1e-5)


@pytest.mark.parametrize('setup,message', [
    (dict(kind='mesh', num_devices=4, shard_params=True), 'num_heads=6 is not divisible by the model axis of 4'),
    (dict(kind='mesh', num_devices=2, shard_params=True, model_axis=3), 'does not divide the 2 devices'),
    (dict(kind='pmap', num_devices=4, shard_params=True), 'needs --parallel=mesh'),
    (dict(kind='mesh', num_devices=4, model_axis=2), 'needs --shard_params'),
    (dict(kind='ring', num_devices=4), "unknown --parallel 'ring'"),
    (dict(kind='mesh', num_devices=9), 'sees only 4 devices'),
])
def test_bad_model_axis(setup, message):
  with pytest.raises(UserError, match=message):
    backend(setup)


def test_vocab_not_divisible_is_named():
  with pytest.raises(UserError, match='vocab_size=263'):
    parallel.make_backend('mesh', 2, shard_params=True, model_config=ModelConfig.tiny())


@pytest.mark.parametrize('flags,message', [
    (dict(num_processes=2), 'needs --coordinator_address'),
    (dict(coordinator_address='127.0.0.1:1234', num_processes=2, process_id=2),
     r'--process_id=2 is out of range: choose 0..1'),
    (dict(coordinator_address='127.0.0.1:1234', num_processes=2, process_id=-1), 'out of range'),
    (dict(coordinator_address='127.0.0.1:1234', num_processes=2), '--process_id is required'),
    (dict(process_id=0), '--num_processes must be a positive integer'),
])
def test_bad_process_flags(flags, message):
  flags = dict(dict(coordinator_address=None, num_processes=None, process_id=None), **flags)
  with pytest.raises(UserError, match=message):
    distributed.check(**flags)
  assert not distributed.check(None, None, None)


def test_tensor_parallel_rules():
  spec = lambda *names: sharding.tensor_parallel_spec(
      [jax.tree_util.DictKey(n) for n in names], np.zeros((4, 4)))
  assert spec('layers', 'mlp', 'gate_proj', 'kernel') == P(None, 'model')
  assert spec('layers', 'mlp', 'down_proj', 'kernel') == P('model', None)
  assert spec('layers', 'attn', 'q_proj', 'lora', 'a') == P()
  assert spec('layers', 'attn_norm', 'scale') == P()


def test_group_by_length_is_an_optimal_partition():
  import itertools
  rng = np.random.default_rng(0)
  for _ in range(20):
    lengths = [int(n) for n in rng.integers(1, 150, size=int(rng.integers(1, 9)))]
    groups = parallel.group_by_length(lengths, height_multiple=2, max_rows=4)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(1 <= len(g) <= 4 for g in groups)
    assert all(len(g) % 2 == 0 for g in groups[:-1])  # Only the last group is not full.
    cost = lambda gs: sum(parallel.round_up(len(g), 2) * (
        parallel.round_up(max(lengths[i] for i in g), 16)) for g in gs)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    best = min(  # Every cut of the sorted rows at even positions.
        cost([order[a:b] for a, b in zip((0,) + cuts, cuts + (len(order),))])
        for k in range(len(order))
        for cuts in itertools.combinations(range(2, len(order), 2), k)
        if all(b - a <= 4 for a, b in zip((0,) + cuts, cuts + (len(order),))))
    assert cost(groups) == best


def test_short_and_long_prompts_go_to_separate_calls():
  groups = parallel.group_by_length([20] * 16 + [100] * 16, height_multiple=8, max_rows=64)
  assert [len(g) for g in groups] == [16, 16] and groups[0] == list(range(16))
  # 8 short rows and one long: 8 x 32 + 8 x 112 slots beat 16 x 112 in one call.
  assert parallel.group_by_length([20] * 8 + [100], height_multiple=8, max_rows=64) == [
      list(range(8)), [8]]
  # 9 short rows and one long: cuts fall at multiples of 8, so the 9th short row rides
  # with the long one (8 x 32 + 8 x 112 < 16 x 112).
  assert parallel.group_by_length([20] * 9 + [100], height_multiple=8, max_rows=64) == [
      list(range(8)), [8, 9]]
  with pytest.raises(ValueError, match='max_rows'):
    parallel.group_by_length([20], height_multiple=8, max_rows=4)
