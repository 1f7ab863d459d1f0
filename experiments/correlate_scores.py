"""Do the loop's intrinsic signals track real quality? Spearman on the held-out set.

  python experiments/correlate_scores.py --candidates=3 --output=benchmarks/correlation.json

For every held-out task the base model samples `--candidates` commands (temperature 0.7,
as in the loop); each command gets (a) the original's reconstruction score, (b) the
hidden-state inversion fidelity, (c) the V2 agreement count (other candidates of the same
task at similarity >= --repro_similarity, the threshold ignored), and its graded real
quality from the validator. Prints Spearman's rho of quality with each signal, with a
percentile bootstrap 95 % CI over tasks (resampling whole tasks keeps candidates of one
task together), and writes every row and the table as JSON. Nothing is executed.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from scipy import stats  # noqa: E402

from inversion_jax import compile_cache  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import early_warning  # noqa: E402
from inversion_jax.loop import experiment  # noqa: E402
from inversion_jax.quality import evaluation, heldout  # noqa: E402
from inversion_jax.records import files  # noqa: E402
from inversion_jax.scoring import inversion  # noqa: E402
from inversion_jax.tasks.bank import Task  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'smollm2-135m-instruct', 'Model to sample from (the base model).')
flags.DEFINE_integer('candidates', 3, 'Commands sampled per held-out task.')
flags.DEFINE_integer('eval_tasks', 0, 'Stratified subset of held-out tasks (0 = all).')
flags.DEFINE_integer('max_new_tokens', 100, 'Command budget.')
flags.DEFINE_integer('seed', 0, 'Sampling seed.')
flags.DEFINE_integer('bootstrap', 2000, 'Bootstrap resamples for the CIs.')
flags.DEFINE_integer('fidelity_layer', None, 'Fidelity layer (default: the middle).')
flags.DEFINE_integer('fidelity_k', 5, 'Fidelity top-k.')
flags.DEFINE_float('repro_similarity', 0.6, 'V2 similarity threshold for the agreement count.')
flags.DEFINE_string('output', None, 'JSON file for the rows and the table.')

SIGNALS = ('reconstruction', 'fidelity', 'agreement')


def spearman_with_ci(quality, signal, task_ids, resamples: int, seed: int = 0):
  """(rho, low, high): Spearman's rho and a percentile bootstrap 95 % CI over tasks."""
  quality, signal, task_ids = map(np.asarray, (quality, signal, task_ids))
  rho = float(stats.spearmanr(quality, signal).statistic)
  tasks = np.unique(task_ids)
  rows_of = {t: np.flatnonzero(task_ids == t) for t in tasks}
  rng = np.random.default_rng(seed)
  draws = []
  for _ in range(resamples):
    picked = np.concatenate([rows_of[t] for t in rng.choice(tasks, len(tasks))])
    if np.ptp(quality[picked]) > 0 and np.ptp(signal[picked]) > 0:
      draws.append(stats.spearmanr(quality[picked], signal[picked]).statistic)
  low, high = np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
  return rho, float(low), float(high)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}')
  if FLAGS.candidates < 2:
    raise UserError('--candidates must be >= 2: the agreement count compares siblings')
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable()
  config = experiment.RunConfig(model=FLAGS.model, max_new_tokens=FLAGS.max_new_tokens,
                                eval_every=0, seed=FLAGS.seed)
  exp = experiment.build(config)
  records = evaluation.subset(heldout.load('test'), FLAGS.eval_tasks)
  tasks = [Task(r['tool'], r.get('intent') or '', r['task'], {}, (), 'heldout') for r in records]
  start = time.perf_counter()
  batch = inversion.score_tasks(exp.generator, exp.style, tasks, FLAGS.candidates, exp.scorer,
                                FLAGS.seed)
  commands = [r.command for r in batch.rows]
  groups = [r.group for r in batch.rows]
  fidelity = exp.generator.fidelity([exp.style.generation(r.task.tool, r.task.text)
                                     for r in batch.rows], [c or ' ' for c in commands],
                                    FLAGS.fidelity_layer if FLAGS.fidelity_layer is not None
                                    else exp.generator.config.num_layers // 2, FLAGS.fidelity_k)
  fidelity = np.where([bool(c) for c in commands], fidelity, 0.0)
  agreement = early_warning.agreement_counts(exp.generator, commands, groups,
                                             FLAGS.repro_similarity)
  items = [records[g] for g in groups]
  graded = evaluation.grade(items, commands, exp.count_tokens)
  quality = np.array([row['verdict']['quality'] for row in graded.rows])
  signals = {'reconstruction': batch.scores, 'fidelity': fidelity,
             'agreement': agreement.astype(float)}
  table = {}
  for name in SIGNALS:
    rho, low, high = spearman_with_ci(quality, signals[name], groups, FLAGS.bootstrap)
    table[name] = {'spearman': rho, 'ci_low': low, 'ci_high': high}
  print(f'{len(commands)} commands for {len(records)} held-out tasks '
        f'({time.perf_counter() - start:.0f}s); graded quality mean {quality.mean():.3f}, '
        f'strict {np.mean([r["verdict"]["ok"] for r in graded.rows]):.1%}')
  print('| signal | Spearman rho with graded quality | 95 % CI (bootstrap over tasks) |')
  print('|---|---|---|')
  for name, row in table.items():
    print(f'| {name} | {row["spearman"]:+.3f} | [{row["ci_low"]:+.3f}, {row["ci_high"]:+.3f}] |')
  if FLAGS.output:
    rows = [{'id': records[g]['id'], 'tool': r.task.tool, 'task': r.task.text,
             'command': r.command, 'reconstruction': r.reconstruction,
             'reconstruction_score': r.score, 'fidelity': float(f), 'agreement': int(a),
             'verdict': v['verdict']}
            for g, r, f, a, v in zip(groups, batch.rows, fidelity, agreement, graded.rows)]
    files.write_json_atomic(FLAGS.output, {
        'flags': {k: FLAGS[k].value for k in ('model', 'candidates', 'eval_tasks',
                                               'max_new_tokens', 'seed', 'bootstrap',
                                               'fidelity_layer', 'fidelity_k',
                                               'repro_similarity')},
        'table': table, 'rows': rows})
    print(f'rows and table: {FLAGS.output}')


if __name__ == '__main__':
  app.run(main)
