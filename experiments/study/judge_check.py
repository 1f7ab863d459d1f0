"""Which self-rating should the study use? The sampled 0-10 reply or its expectation.

Run before any study run, on the base model: one BEFORE phase (the study's round-1 tasks and
candidates for a seed) is generated, inverted and rated with the sampled judge (the
original's), and the same rating prompts are also rated by the expected judge
(`--judge=expected`: E[digit] from one forward pass). For each judge it reports how much
of its range it uses (the share of the modal value, the standard deviation) and its Spearman
correlation with the command's graded real quality and with the text part of the score
(overlap and sequence ratio), on the same rows. A rating that is one value for most replies
adds a constant to half the score's weight; one that tracks nothing real cannot select.

  python experiments/study/judge_check.py --output=benchmarks/study2/judge_check.json \
      --seed=0 --tasks=50 --candidates=3
"""

import collections
import json
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from inversion_jax.errors import UserError  # noqa: E402
from inversion_jax.loop import experiment  # noqa: E402
from inversion_jax.loop import presets  # noqa: E402
from inversion_jax.loop import rounds  # noqa: E402
from inversion_jax.quality import evaluation  # noqa: E402
from inversion_jax.scoring import inversion  # noqa: E402

flags.DEFINE_string('output', None, 'JSON file to write.', required=True)
flags.DEFINE_integer('seed', 0, 'Run seed (round-1 tasks and candidates).')
flags.DEFINE_integer('tasks', 50, 'Tasks of the phase.')
flags.DEFINE_integer('candidates', 3, 'Commands per task.')
flags.DEFINE_string('preset', 'original', 'Preset of the study.')
flags.DEFINE_string('prompt_style', 'fewshot', 'Prompt style of the study.')
FLAGS = flags.FLAGS


def describe(values: np.ndarray, graded: np.ndarray, text_part: np.ndarray) -> dict:
  counts = collections.Counter(np.round(values, 3).tolist())
  value, count = counts.most_common(1)[0]
  return {'mean': float(values.mean()), 'std': float(values.std()),
          'modal_value': value, 'modal_share': count / len(values),
          'distinct_values': len(counts),
          'spearman_graded': _spearman(values, graded),
          'spearman_text_part': _spearman(values, text_part)}


def _spearman(a, b):
  if np.std(a) == 0 or np.std(b) == 0:
    return {'rho': None, 'p': None}
  result = stats.spearmanr(a, b)
  return {'rho': float(result.statistic), 'p': float(result.pvalue)}


def main(argv):
  del argv
  config = experiment.RunConfig(tasks=FLAGS.tasks, candidates=FLAGS.candidates, seed=FLAGS.seed,
                                eval_every=0, judge='sample')
  config = presets.apply(config, FLAGS.preset, explicit=('prompt_style', 'judge'))
  config = config.replace(prompt_style=FLAGS.prompt_style)
  exp = experiment.build(config)
  path = pathlib.Path(FLAGS.output)
  path.parent.mkdir(parents=True, exist_ok=True)
  batch = rounds.score_round(exp, exp.generator, 1, 'before')
  graded = evaluation.grade(evaluation.items_from_tasks([r.task for r in batch.rows]),
                            [r.command for r in batch.rows], exp.count_tokens)
  rows = [{'tool': r.task.tool, 'task': r.task.text, 'command': r.command,
           'reconstruction': r.reconstruction, 'rating': r.rating_text, 'overlap': r.overlap,
           'ratio': r.ratio, 'judge': r.judge, 'quality': g['verdict']['quality']}
          for r, g in zip(batch.rows, graded.rows)]
  rows_path = path.with_suffix('.rows.jsonl')  # Kept first: the expected judge compiles long.
  rows_path.write_text(''.join(json.dumps(row) + '\n' for row in rows), encoding='utf-8')
  prompts = [exp.style.rating(r.task.text, r.reconstruction) for r in batch.rows]
  expected = np.asarray(inversion.expected_ratings(exp.generator, prompts), np.float64)
  sampled = np.array([r.judge for r in batch.rows])
  text_part = np.array([0.2 * r.overlap + 0.3 * r.ratio for r in batch.rows])
  quality = np.array([row['quality'] for row in rows])
  result = {
      'settings': {'seed': FLAGS.seed, 'tasks': FLAGS.tasks, 'candidates': FLAGS.candidates,
                   'preset': FLAGS.preset, 'prompt_style': FLAGS.prompt_style},
      'rows': len(batch.rows),
      'sampled': describe(sampled, quality, text_part),
      'expected': describe(expected, quality, text_part),
      'rating_replies': collections.Counter(r.rating_text for r in batch.rows).most_common(10),
      'scores': {'sampled_judge': _quantiles(text_part + 0.5 * sampled),
                 'expected_judge': _quantiles(text_part + 0.5 * expected)},
  }
  result['expected_per_row'] = expected.round(4).tolist()
  path.write_text(json.dumps(result, indent=2) + '\n', encoding='utf-8')
  print(json.dumps({k: result[k] for k in ('sampled', 'expected')}, indent=2))


def _quantiles(scores):
  return {f'q{int(q * 100)}': float(np.quantile(scores, q)) for q in (0.1, 0.25, 0.393, 0.5, 0.75, 0.9)}


if __name__ == '__main__':
  try:
    app.run(main)
  except UserError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(2)
