"""Every compiled call of one scoring phase (generate, invert, rate), timed and listed.

Runs the BEFORE phase of round 1 twice (the first compiles) and prints, for the second,
each device call in order (prefill parts with their [rows, width] and cache width, decode
calls with their batch, steps and cache) and a table of calls grouped by kind and shape:
where a round's seconds go. Usage (README's model, the original's 50 x 3):

  .venv/bin/python experiments/profile_calls.py --config=original
"""

import collections
import time

from absl import app
from absl import flags
import jax

import benchmark_round
from inversion_jax.loop import experiment
from inversion_jax.loop import rounds
from inversion_jax.parallel import backends

FLAGS = flags.FLAGS
flags.DEFINE_enum('config', 'original', sorted(benchmark_round.CONFIGS), 'Round size.')
flags.DEFINE_integer('eval_tasks', 36, 'Held-out tasks (unused here; the config needs one).')
flags.DEFINE_bool('each', False, 'Also print every call in order.')


def describe(name: str, args, out) -> str:
  if name in ('_prefill', '_prefill_into'):
    tokens = args[0] if name == '_prefill' else args[2]
    return f'rows x width {tuple(tokens.shape)}, cache {out.cache[0].k.shape[-1]}'
  if name == '_decode':
    return f'batch {out.token.shape[0]}, cache {out.cache[0].k.shape[-1]}'
  return ''


def install(log: list):
  """Wraps Backend.compile so every call blocks and is timed (steps from the carry)."""
  compile_fn = backends.Backend.compile

  def timed(self, fn, *static, **kw):
    compiled = compile_fn(self, fn, *static, **kw)
    name = getattr(fn, '__name__', str(fn))

    def call(*args):
      step = int(args[1].step) if name == '_decode' else None  # args[0] is the state.
      start = time.perf_counter()
      out = jax.block_until_ready(compiled(*args))
      seconds = time.perf_counter() - start
      steps = int(out.step) - step if step is not None else 0
      log.append((name, describe(name, args[1:], out), steps, seconds))
      return out

    return call

  backends.Backend.compile = timed


def main(argv):
  del argv
  log = []
  install(log)
  config = benchmark_round.run_config(FLAGS.config, {'eval_tasks': FLAGS.eval_tasks})
  exp = experiment.build(config)
  for _ in range(2):
    log.clear()
    start = time.perf_counter()
    batch = rounds.score_round(exp, exp.generator, 1, 'before')
    total = time.perf_counter() - start
  if FLAGS.each:
    for name, what, steps, seconds in log:
      print(f'{seconds:8.3f} s  {name:14s} {what}' + (f', {steps} steps' if steps else ''))
  groups = collections.defaultdict(lambda: [0, 0, 0.0])
  for name, what, steps, seconds in log:
    entry = groups[(name, what)]
    entry[0], entry[1], entry[2] = entry[0] + 1, entry[1] + steps, entry[2] + seconds
  print(f'{FLAGS.config}: BEFORE phase {total:.1f} s, by stage '
        + ', '.join(f'{k} {v:.1f} s' for k, v in batch.seconds.items()))
  print(f'{"seconds":>8}  {"calls":>5}  {"steps":>5}  call')
  for (name, what), (calls, steps, seconds) in sorted(groups.items(), key=lambda kv: -kv[1][2]):
    per = f'  ({1000 * seconds / steps:.0f} ms/step)' if steps else ''
    print(f'{seconds:8.2f}  {calls:5d}  {steps:5d}  {name} {what}{per}')
  by_kind = collections.Counter()
  for name, _, _, seconds in log:
    by_kind[name] += seconds
  print('by kind: ' + ', '.join(f'{k} {v:.1f} s' for k, v in by_kind.most_common()))


if __name__ == '__main__':
  app.run(main)
