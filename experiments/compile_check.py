"""Compiles every program of a round for a Cloud TPU topology, from this host, no TPU needed.

  pip install "jax[tpu]==$(python -c 'import jax; print(jax.__version__)')"   # the tpu extra
  python experiments/compile_check.py --topology=v5e:2x4 --model_axis=4 --shape=mistral-7b \
      --rows=150 --dtype=bfloat16 [--quantize=int8] --output=benchmarks/compile_v5e-8.json

libtpu gives the topology's devices as abstract ones; the run's state is built from
abstract weights (`jax.ShapeDtypeStruct`s placed with their shardings, `parallel.footprint`)
and XLA compiles each program for the chip and reports its memory per chip and its cost.
Printed per chip: the resident state of a whole run (weights once, adapters, optimizer
state, each generator's own weights, prefix caches), each program's temporaries, the
peak, whether it fits the chip's HBM and with what margin, and flops / bytes per call
with a roofline ESTIMATE from the chip's published peak figures. These are compile-time
figures, not measurements of a run.
"""

import dataclasses
import datetime
import functools
import json
import os
import sys
import time

os.environ.setdefault('JAX_PLATFORMS', 'cpu')  # Compile for the topology; run nothing there.
os.environ.setdefault('TPU_SKIP_MDS_QUERY', '1')  # No TPU metadata server on this host.
os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')  # Other JAX processes hold libtpu's lock.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import provenance  # noqa: E402
from inversion_jax import parallel  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.nn import config as config_lib  # noqa: E402
from inversion_jax.nn import quantize as quantize_lib  # noqa: E402
from inversion_jax.nn.config import ModelConfig  # noqa: E402
from inversion_jax.parallel import footprint  # noqa: E402

GiB = 1024 ** 3

SHAPES = {'mistral-7b': ModelConfig.mistral_7b_v02, 'llama3-8b': ModelConfig.llama3_8b,
          'llama2-7b': ModelConfig.llama2_7b, 'tinyllama-1b': ModelConfig.tinyllama_1b,
          'smollm2-135m': ModelConfig.smollm2_135m,
          'tiny': ModelConfig.tiny}  # Checks the tool itself in seconds.


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (cloud.google.com/tpu/docs/system-architecture-tpu-vm)."""

  name: str
  hbm_bytes: int
  bf16_flops: float  # Peak dense bf16 FLOP/s.
  int8_ops: float
  hbm_bandwidth: float  # Bytes/s.


CHIPS = {
    'TPU v4': Chip('v4', 32 * GiB, 275e12, 275e12, 1200e9),
    'TPU v5 lite': Chip('v5e', 16 * GiB, 197e12, 394e12, 819e9),
    'TPU v5': Chip('v5p', 95 * GiB, 459e12, 918e12, 2765e9),
    'TPU v6 lite': Chip('v6e', 32 * GiB, 918e12, 1836e12, 1640e9),
}

FLAGS = flags.FLAGS
flags.DEFINE_string('topology', 'v5e:2x4', 'A Cloud TPU topology libtpu knows: v5e:2x4 '
                    '(v5e-8, one host), v5e:4x8 (v5e-32, 8 hosts), v5p:2x2x1, v4:2x2x1, ...')
flags.DEFINE_integer('model_axis', 4, 'Chips sharing the weights (tensor-parallel).')
flags.DEFINE_enum('shape', 'mistral-7b', list(SHAPES), 'Model shape (weights are abstract).')
flags.DEFINE_integer('rows', 150, 'Rows of a generation call: tasks x candidates.')
flags.DEFINE_enum('dtype', 'bfloat16', list(config_lib.DTYPES), 'Weight dtype.')
flags.DEFINE_enum('quantize', 'none', list(quantize_lib.MODES), 'Generation weights.')
flags.DEFINE_integer('prefix_len', footprint.RoundShape.prefix_len, 'Shared prefix tokens.')
flags.DEFINE_integer('max_new_tokens', footprint.RoundShape.max_new, 'Generation budget.')
flags.DEFINE_integer('batch_size', footprint.RoundShape.train_batch, 'Train batch (rows).')
flags.DEFINE_integer('train_len', footprint.RoundShape.train_len, 'Tokens per train row.')
flags.DEFINE_string('output', None, 'JSON file to write (default: print only).')


def topology_devices(name: str):
  """The abstract devices of a topology; one-line UserErrors without libtpu or for a
  name it does not know."""
  try:
    import libtpu  # noqa: F401,PLC0415  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as error:
    raise UserError('compiling for a TPU needs the tpu extra (libtpu): pip install '
                    f'"jax[tpu]=={jax.__version__}"') from error
  from jax.experimental import topologies  # noqa: PLC0415  # pylint: disable=g-import-not-at-top
  generation, _, dims = name.partition(':')
  extra = {}
  if generation == 'v4':
    extra['chip_config_name'] = 'megacore'
  sizes = [int(d) for d in dims.split('x')] if dims and dims.replace('x', '').isdigit() else []
  if generation == 'v5e' and len(sizes) == 2 and sizes[0] * sizes[1] <= 8:
    extra['chips_per_host_bounds'] = (*sizes, 1)  # v5e-8 and smaller: one host.
  try:
    return topologies.get_topology_desc(platform='tpu', topology_name=name, **extra).devices
  except Exception as error:  # libtpu raises runtime errors of its own types.
    reason = ' '.join(str(error).split())[:160]
    raise UserError(f'--topology={name!r} is not a topology libtpu knows ({reason}); try '
                    'v5e:2x4, v5e:4x8, v5p:2x2x1 or v4:2x2x1') from error


def roofline(program: dict, chip: Chip, quantize: str) -> tuple[float, float]:
  """(high, low) seconds per call (per step for the decode loop), ESTIMATES at the chip's
  published peaks: the slower of compute and memory traffic, counting XLA's bytes
  accessed (every operand of every op: above the HBM traffic) or the arguments read once
  (below it). Real programs run below peak, so neither is a measurement."""
  peak = chip.int8_ops if quantize == 'int8' and 'decode' in program['name'] else chip.bf16_flops
  compute = program['flops'] / peak
  return (max(compute, program['bytes_accessed'] / chip.hbm_bandwidth),
          max(compute, program['arguments'] / chip.hbm_bandwidth))


def table(result: dict) -> str:
  chip, hbm = result['chip'], result['chip']['hbm_bytes']
  lines = [f"{result['topology']}: {result['devices']} chips ({chip['name']}, "
           f"{hbm / GiB:.0f} GiB HBM), {result['hosts']} host(s), mesh data "
           f"{result['mesh']['data']} x model {result['mesh']['model']}; {result['shape']} "
           f"{result['dtype']}, quantize={result['quantize']}. Per chip, GiB "
           '(compile-time figures, not a run):', '  resident state of a run:']
  for item, size in result['resident'].items():
    lines.append(f'    {item:<45} {size / GiB:8.3f}')
  lines.append(f"    {'total':<45} {result['resident_total'] / GiB:8.3f}")
  lines.append(f"  {'program':<32}{'temps':>8}{'extra':>8}{'peak':>8}{'GFLOP':>10}"
               f"{'GB moved':>10}{'est. ms':>14}")
  for p in result['programs']:
    lines.append(f"  {p['name']:<32}{p['temps'] / GiB:8.3f}{p['extra'] / GiB:8.3f}"
                 f"{p['peak'] / GiB:8.3f}{p['flops'] / 1e9:10.1f}"
                 f"{p['bytes_accessed'] / 1e9:10.2f}"
                 f"{p['floor_ms_estimate']:7.2f}-{p['roofline_ms_estimate']:<6.2f}")
  peak = result['peak']
  lines.append(f"  peak {peak['bytes'] / GiB:.2f} GiB ({peak['program']}) of {hbm / GiB:.0f} GiB:"
               f" {'FITS' if result['fits'] else 'DOES NOT FIT'}, margin "
               f"{result['margin_bytes'] / GiB:.2f} GiB ({100 * result['margin_fraction']:.0f} %)")
  return '\n'.join(lines)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  for name in ('rows', 'model_axis', 'prefix_len', 'max_new_tokens', 'batch_size', 'train_len'):
    if getattr(FLAGS, name) < 1:
      raise UserError(f'--{name} must be a positive integer, got {getattr(FLAGS, name)}')
  config = SHAPES[FLAGS.shape]().replace(dtype=FLAGS.dtype)
  devices = topology_devices(FLAGS.topology)
  chip = CHIPS.get(devices[0].device_kind)
  if chip is None:
    raise UserError(f'no published figures for {devices[0].device_kind!r}; known chips: '
                    f'{", ".join(CHIPS)}')
  backend = parallel.make_backend('mesh', shard_params=True, model_axis=FLAGS.model_axis,
                                  model_config=config, devices=devices)
  shape = footprint.RoundShape(rows=FLAGS.rows, prefix_len=FLAGS.prefix_len,
                               max_new=FLAGS.max_new_tokens, train_batch=FLAGS.batch_size,
                               train_len=FLAGS.train_len)
  start = time.perf_counter()
  say = lambda text: print(f'[{time.perf_counter() - start:6.0f} s] {text}', file=sys.stderr,
                           flush=True)
  describe = functools.partial(describe_result, devices=devices, chip=chip, backend=backend,
                               shape=shape, start=start)
  write = lambda partial: write_json(describe(partial, complete=False))
  result = describe(footprint.check_round(config, backend, shape, quantize=FLAGS.quantize,
                                          progress=say, report=write), complete=True)
  print(table(result))
  write_json(result)


def write_json(result: dict) -> None:
  """Written after every program: a check cut short keeps what it compiled."""
  if FLAGS.output:
    with open(FLAGS.output, 'w', encoding='utf-8') as file:
      json.dump(result, file, indent=1)
      file.write('\n')


def describe_result(result: dict, *, devices, chip: Chip, backend, shape, start,
                    complete: bool) -> dict:
  """The check's figures with the fit, the roofline estimates and how they were made."""
  for program in result['programs']:
    high, low = roofline(program, chip, FLAGS.quantize)
    program['roofline_ms_estimate'], program['floor_ms_estimate'] = 1e3 * high, 1e3 * low
  hbm, peak = chip.hbm_bytes, result['peak']['bytes']
  return dict(
      topology=FLAGS.topology, devices=len(devices),
      hosts=len({d.process_index for d in devices}),
      mesh=dict(backend.mesh.shape), chip=dataclasses.asdict(chip), shape=FLAGS.shape,
      dtype=FLAGS.dtype, quantize=FLAGS.quantize, round=dataclasses.asdict(shape),
      complete=complete, **result, fits=peak <= hbm, margin_bytes=hbm - peak,
      margin_fraction=(hbm - peak) / hbm,
      note='compile-time figures from XLA (memory_analysis, cost_analysis), not a run; '
           'floor_ms_estimate..roofline_ms_estimate: estimates from published peak figures '
           '(arguments read once / XLA bytes accessed, whichever the compute time does not '
           'exceed); flops and bytes of the decode loop are per step (XLA counts a while '
           'body once); GB moved = XLA bytes accessed',
      compile_seconds=round(time.perf_counter() - start, 1),
      commit=provenance.git_commit(short=True),
      jax=jax.__version__,
      date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
      host=provenance.host())


if __name__ == '__main__':
  app.run(main)
