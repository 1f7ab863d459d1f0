"""One placed base shared by every stage, and a round compiled from abstract weights.

On 4 fake CPU devices (data 2 x model 2): no stage holds its own copy of the base
weights (the same buffers, by identity, and the live arrays' bytes); every program of a
round lowers and compiles from `jax.ShapeDtypeStruct` weights, and the resident state
counted from abstract weights equals the bytes of a real placed run's arrays; traced
for a TPU, attention takes the mixed-precision dots (no CPU upcasts).
"""

import dataclasses
import gc

import jax
import jax.numpy as jnp
import numpy as np

from inversion_jax import parallel
from inversion_jax.loop import experiment
from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from inversion_jax.parallel import footprint
from inversion_jax.parallel import sharding as sharding_lib
from tests.tiny_run import config_for

CONFIG = ModelConfig.tiny(vocab_size=264)
SHAPE = footprint.RoundShape(rows=12, prefix_len=16, part_rows=8, part_width=16,
                             cache_prompt=32, max_new=16, train_len=32)


def mesh_backend(config=CONFIG):
  return parallel.make_backend('mesh', 4, shard_params=True, model_axis=2, model_config=config)


def leaf_ids(tree):
  return {id(x) for x in jax.tree.leaves(tree)}


def device_bytes(arrays, device):
  return sum(s.data.nbytes for x in arrays for s in x.addressable_shards if s.device == device)


def test_no_stage_holds_its_own_copy_of_the_base(tiny_gguf, tmp_path):
  config = config_for(tiny_gguf, tmp_path, parallel='mesh', num_devices=4, shard_params=True,
                      model_axis=2, batch_size=2, lora_rank=2)
  exp = experiment.build(config)
  plain = exp.plain_state
  kernel = plain['layers'][0]['mlp']['up_proj']['kernel'][...]
  assert kernel.sharding.spec == sharding_lib.tensor_parallel_spec(
      [jax.tree_util.DictKey(n) for n in ('layers', 'mlp', 'up_proj', 'kernel')], kernel)
  base = leaf_ids(plain)
  assert leaf_ids(exp.generator.state) == base
  assert leaf_ids(exp.trainer.device_base) == base == leaf_ids(exp.base)
  # A round's generator: only the attention kernels the adapters fold into are new.
  device = jax.devices()[0]
  gc.collect()
  before = {id(x): x for x in jax.live_arrays()}
  round_gen = exp.generator.with_state(exp.inference_state(exp.initial_lora))
  gc.collect()
  new = [x for x in jax.live_arrays() if id(x) not in before]
  own = [x for x in jax.tree.leaves(round_gen.state) if id(x) not in base]
  attention = [x for path, x in jax.tree_util.tree_flatten_with_path(plain)[0]
               if 'attn' in jax.tree_util.keystr(path) and 'kernel' in jax.tree_util.keystr(path)]
  assert len(own) == len(attention) == 2 * 4  # 2 layers x q, k, v, o.
  assert device_bytes(new, device) == device_bytes(own, device) == device_bytes(attention, device)


def test_weights_load_straight_into_their_sharding():
  backend = mesh_backend()
  state = model_lib.create(CONFIG, seed=3)[1]
  flat = model_lib.to_flat_params(state)
  reads = []

  class Tensor:  # A lazy checkpoint tensor: records which slices are read.
    def __init__(self, array):
      self.array, self.shape = array, array.shape

    def __getitem__(self, index):
      reads.append(np.empty(self.shape)[index].shape)
      return self.array[index]

  _, placed = model_lib.from_flat_params(CONFIG, {k: Tensor(v) for k, v in flat.items()},
                                         place=backend.param_sharding)
  for name, value in model_lib.to_flat_params(placed).items():
    np.testing.assert_array_equal(value, flat[name])
  q = placed['layers'][0]['attn']['q_proj']['kernel'][...]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, 'model')
  assert (48, 24) in reads and (48, 48) not in reads  # Each device read its half of q.


def test_abstract_round_compiles_and_counts_what_a_real_run_holds():
  backend = mesh_backend()
  lines = []
  abstract = footprint.check_round(CONFIG, backend, SHAPE, progress=lines.append)
  names = [p['name'] for p in abstract['programs']]
  assert names == list(footprint.PROGRAM_ORDER)
  assert all(p['temps'] >= 0 and p['flops'] > 0 for p in abstract['programs'])
  decode = abstract['programs'][0]
  assert decode['aliased'] > 0  # The carry is donated: updated in place.
  # The same accounting from real placed weights equals the abstract one, and the base
  # item is exactly the bytes the placed weights take on a device.
  plain_graphdef, plain = model_lib.create(CONFIG, seed=0)
  run = footprint.run_state(plain_graphdef, plain, backend, lora_lib.LoRAConfig())
  device = backend.mesh.devices.flat[0]
  assert abstract['resident']['base weights (once)'] == device_bytes(
      jax.tree.leaves(run.plain), device)
  real = footprint.check_round(CONFIG, backend, SHAPE, plain_state=plain, progress=lines.append)
  assert real['resident'] == abstract['resident']
  assert abstract['resident']['base generator: weights beyond the base'] == 0
  assert abstract['peak']['bytes'] == abstract['resident_total'] + max(
      p['extra'] for p in abstract['programs'])


def test_a_round_smaller_than_a_prefill_part_compiles():
  # A prefill part never holds more rows than its wave (the generator cuts parts of a wave).
  shape = dataclasses.replace(SHAPE, rows=8, part_rows=32)
  result = footprint.check_round(CONFIG, mesh_backend(), shape, progress=lambda _: None)
  assert [p['name'] for p in result['programs']] == list(footprint.PROGRAM_ORDER)


def test_a_tpu_trace_keeps_the_mixed_precision_dots():
  a = jnp.ones((2, 4), jnp.bfloat16)

  def converts(platform):
    with model_lib.compute_platform(platform):
      jaxpr = jax.make_jaxpr(lambda x: model_lib.einsum_f32('ab,cb->ac', x, x))(a)
    return sum(e.primitive.name == 'convert_element_type' for e in jaxpr.eqns)

  assert converts('tpu') == 0 and converts('cpu') == 2
