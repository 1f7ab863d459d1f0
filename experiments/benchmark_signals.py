"""KL from base, the signals phase's cost: a fixed probe against a fresh sample a round.

  taskset -c 1 python experiments/benchmark_signals.py --rounds=4 \
      --output_json=benchmarks/signals_kl_2026-12-07.json

KL from base was measured on the round's own tasks (50 at the original's dose), with two
prefills a round: the trained model and the base model. Now (`rounds.kl_probe`) it reads
as many prompts as a round has tasks (at most `early_warning.KL_PROBES`), drawn once a run,
and the base side is computed once. This times both ways in one process on the same
weights, interleaved round by round so the machine's load hits both alike:

  PEER  the former way: `--tasks` fresh tasks a round (its 'after_tasks' draw), last-token
        logits of both models;
  OURS  the probe with the round's weights; its base side once, reported apart.

Both sides run the base model's weights (a prefill's time does not depend on their values).
Reported per round: seconds and prompt tokens prefilled (shared prefixes once a call, as
the sampler prefills them), and peer / ours.
"""

import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from inversion_jax import compile_cache  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import early_warning  # noqa: E402
from inversion_jax.loop import experiment, rounds  # noqa: E402
from inversion_jax.nn.loading import registry  # noqa: E402
from inversion_jax.tasks import bank as bank_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer('rounds', 4, 'Rounds timed (each: the peer\'s fresh draw, then ours).')
flags.DEFINE_integer('tasks', 50, 'Tasks a round (the original\'s dose: 50).')
flags.DEFINE_string('model', registry.DEFAULT_MODEL, 'Model (default: the embedded one).')
flags.DEFINE_string('output_json', None, 'Where the figures are written (JSON).')


def prompt_tokens(exp, prompts) -> int:
  """Tokens a prefill of `prompts` computes: each suffix, and each shared prefix once."""
  return (sum(exp.count_tokens(p.suffix) for p in prompts) +
          sum(exp.count_tokens(h) for h in {p.prefix for p in prompts}))


def timed(function) -> float:
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def measure(exp, rounds_timed: int, tasks: int) -> dict:
  gen = exp.generator
  base_side = timed(lambda: rounds.kl_probe(exp))
  probe = exp.kl_probe[0]
  out = []
  for round_index in range(1, rounds_timed + 1):
    drawn = bank_lib.sample_tasks(exp.bank, tasks, rounds.derive_seed(
        exp.config.seed, round_index, 'after_tasks'))
    fresh = [exp.style.generation(t.tool, t.text) for t in drawn][:early_warning.KL_PROBES]
    peer = timed(lambda: [early_warning.next_token_log_probs(g, fresh) for g in (gen, gen)])
    ours = timed(lambda: early_warning.next_token_log_probs(gen, probe))
    out.append({'round': round_index, 'peer_s': peer, 'ours_s': ours, 'peer_over_ours':
                peer / ours, 'peer_tokens': 2 * prompt_tokens(exp, fresh),
                'ours_tokens': prompt_tokens(exp, probe)})
  later = out[1:] or out
  return {'base_side_once_s': base_side, 'probe_prompts': len(probe), 'rounds': out,
          'median_peer_over_ours_after_round_1': statistics.median(
              r['peer_over_ours'] for r in later)}


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}')
  if FLAGS.rounds < 1 or FLAGS.tasks < 1:
    raise UserError('--rounds and --tasks must be >= 1')
  compile_cache.enable()
  exp = experiment.build(experiment.RunConfig(model=FLAGS.model, tasks=FLAGS.tasks,
                                              cycles=1))
  result = {'model': FLAGS.model, 'tasks': FLAGS.tasks} | measure(exp, FLAGS.rounds, FLAGS.tasks)
  for r in result['rounds']:
    print(f'round {r["round"]}: peer {r["peer_s"]:.2f} s ({r["peer_tokens"]} tokens), ours '
          f'{r["ours_s"]:.2f} s ({r["ours_tokens"]} tokens): {r["peer_over_ours"]:.2f}x')
  print(f'base side, once a run: {result["base_side_once_s"]:.2f} s; median peer / ours '
        f'after round 1: {result["median_peer_over_ours_after_round_1"]:.2f}x')
  if FLAGS.output_json:
    pathlib.Path(FLAGS.output_json).write_text(json.dumps(result, indent=1))
    print(f'written: {FLAGS.output_json}')


if __name__ == '__main__':
  app.run(main)
