"""Do the measures see a worse command as worse? Degraded references, scored three ways.

  python experiments/validate_measures.py --output=benchmarks/measures \
      [--rows=benchmarks/heldout_base.json]

Every reference command of every held-out task (`quality/heldout/source.jsonl`) is degraded
in each class of `quality/degrade.py` (drop the intent, drop the target, a wrong value, an
unknown option, a duplicate, a contradiction, an extra chained command, bare tool + target,
flag spam, prose) and scored by the installed validator (strict pass, graded quality) and
by NLC2CMD against the task's references. Per class: how many references it applies to,
the mean of each measure, and the fraction of references whose degraded form scores below
the reference itself, per measure (a measure that is blind to a class shows it here).

With `--rows` (held-out rows as JSON lines, or a JSON file with a `rows` list as
`experiments/evaluate_quality.py --model` writes), the rows' commands are graded again with
the installed validator and scored by NLC2CMD, and Spearman's rank correlation of graded
with NLC2CMD is reported (scipy.stats.spearmanr). Writes `<output>.json` and `<output>.md`.
Nothing runs a command.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.quality import measure_check  # noqa: E402
from inversion_jax.quality.heldout import builder  # noqa: E402
from inversion_jax.records import files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('output', 'measures', 'Path prefix of the .json and .md written.')
flags.DEFINE_string('rows', None, 'Held-out rows of a model (JSONL, or JSON with "rows").')
flags.DEFINE_list('tasks', [], 'Only these held-out task ids (default: every task).')


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --output, --rows and --tasks')
  records = builder.read_source()
  if FLAGS.tasks:
    missing = sorted(set(FLAGS.tasks) - {r['id'] for r in records})
    if missing:
      raise UserError(f'--tasks: no held-out task {missing[0]!r}')
    records = [r for r in records if r['id'] in FLAGS.tasks]
  table = measure_check.degradations(records)
  corr = None
  if FLAGS.rows:
    rows = measure_check.read_rows(pathlib.Path(FLAGS.rows))
    corr = measure_check.correlation(builder.read_source(), rows)
  prefix = pathlib.Path(FLAGS.output)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  text = measure_check.markdown(table, corr)
  files.write_json_atomic(prefix.with_suffix('.json'), {
      'tasks': len(records), 'references': table['reference']['n'], 'degradations': table,
      'correlation': corr, 'rows': FLAGS.rows})
  files.write_text_atomic(prefix.with_suffix('.md'), text)
  print(text)
  print(f'written: {prefix}.json, {prefix}.md')


if __name__ == '__main__':
  app.run(main)
