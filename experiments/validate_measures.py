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

import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from scipy import stats  # noqa: E402

from inversion_jax import history  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.quality import degrade, nlc2cmd, validator  # noqa: E402
from inversion_jax.quality.heldout import builder  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('output', 'measures', 'Path prefix of the .json and .md written.')
flags.DEFINE_string('rows', None, 'Held-out rows of a model (JSONL, or JSON with "rows").')
flags.DEFINE_list('tasks', [], 'Only these held-out task ids (default: every task).')

MEASURES = ('strict', 'graded', 'nlc2cmd')
LABELS = {'strict': 'strict', 'graded': 'graded', 'nlc2cmd': 'NLC2CMD'}


def score(record: dict, command: str) -> dict[str, float]:
  """The three measures of one command for one held-out task."""
  verdict = validator.validate(record['tool'], record['task'], command,
                               intent_options=record['intent_options'], values=record['values'])
  return {'strict': float(verdict.ok), 'graded': float(verdict.quality),
          'nlc2cmd': nlc2cmd.score(command, record['references'])}


def degradations(records) -> dict:
  """Per class (and 'reference'): n, the mean of each measure, the fraction below the
  reference per measure, and a few degraded commands that were not below."""
  per_class = {name: [] for name in ('reference',) + tuple(degrade.CLASSES)}
  for record in records:
    for reference in record['references']:
      own = score(record, reference)
      per_class['reference'].append((record['id'], reference, own, own))
      for name in degrade.CLASSES:
        command = degrade.degrade(name, record, reference)
        if command is not None:
          per_class[name].append((record['id'], command, score(record, command), own))
  out = {}
  for name, cases in per_class.items():
    entry = {'n': len(cases)}
    for measure in MEASURES:
      entry[measure] = _mean([got[measure] for _, _, got, _ in cases])
      if name != 'reference':
        below = [got[measure] < own[measure] for _, _, got, own in cases]
        entry[f'below/{measure}'] = _mean(below)
        entry[f'not_below/{measure}'] = [
            {'id': task, 'command': command, 'score': got[measure], 'reference': own[measure]}
            for task, command, got, own in cases if not got[measure] < own[measure]][:5]
    out[name] = entry
  return out


def _mean(values):
  return float(np.mean(values)) if len(values) else None


def read_rows(path: pathlib.Path) -> list[dict]:
  """Held-out rows from JSON lines, or from a JSON object's `rows` list."""
  try:
    text = path.read_text(encoding='utf-8')
  except OSError as error:
    raise UserError(f'cannot read --rows={path} ({error.strerror})') from None
  except UnicodeDecodeError:
    raise UserError(f'--rows={path} is not UTF-8 text') from None
  try:
    if path.suffix == '.json':
      rows = json.loads(text)['rows']
    else:
      rows = [json.loads(line) for line in text.splitlines() if line.strip()]
  except (ValueError, KeyError, TypeError) as error:
    raise UserError(f'--rows={path}: not held-out rows ({error})') from None
  if not rows or not all(isinstance(r, dict) and 'id' in r and 'command' in r for r in rows):
    raise UserError(f'--rows={path}: every row needs "id" and "command"')
  return rows


def correlation(records, rows) -> dict:
  """Spearman's rho of graded with NLC2CMD over the rows, both scored now."""
  by_id = {r['id']: r for r in records}
  unknown = sorted({row['id'] for row in rows} - set(by_id))
  if unknown:
    raise UserError(f'--rows has tasks that are not held-out tasks: {", ".join(unknown[:5])}')
  scored = [score(by_id[row['id']], row['command'] or '') for row in rows]
  graded = np.array([s['graded'] for s in scored])
  nlc = np.array([s['nlc2cmd'] for s in scored])
  result = {'n': len(rows), 'graded_mean': float(graded.mean()), 'nlc2cmd_mean': float(nlc.mean()),
            'strict_mean': float(np.mean([s['strict'] for s in scored]))}
  tools = [by_id[row['id']]['tool'] for row in rows]
  result['per_tool'] = {tool: {measure: _mean([s[measure] for s, t in zip(scored, tools)
                                               if t == tool]) for measure in MEASURES}
                        | {'n': tools.count(tool)} for tool in sorted(set(tools))}
  if np.ptp(graded) > 0 and np.ptp(nlc) > 0:
    test = stats.spearmanr(graded, nlc)
    result |= {'spearman_rho': float(test.statistic), 'p_value': float(test.pvalue)}
  else:
    result |= {'spearman_rho': None, 'p_value': None}  # A constant side has no ranks.
  return result


def _cell(value, spec='.3f'):
  return 'n/a' if value is None else format(value, spec)


def markdown(table: dict, corr: dict | None) -> str:
  lines = ['| degradation | n | ' + ' | '.join(f'{LABELS[m]} mean' for m in MEASURES) + ' | '
           + ' | '.join(f'below ref. ({LABELS[m]})' for m in MEASURES) + ' |',
           '|---|---|' + '---|' * (2 * len(MEASURES))]
  for name, entry in table.items():
    below = [_cell(entry.get(f'below/{m}'), '.0%') if name != 'reference' else '-'
             for m in MEASURES]
    lines.append(f'| {name} | {entry["n"]} | '
                 + ' | '.join(_cell(entry[m]) for m in MEASURES) + ' | ' + ' | '.join(below)
                 + ' |')
  lines += ['', '"below ref.": the fraction of references whose degraded form scores lower '
            'than the reference itself under that measure.']
  if corr is not None:
    lines += ['', f'Spearman rank correlation of graded with NLC2CMD over {corr["n"]} held-out '
              f'commands: rho = {_cell(corr["spearman_rho"])} (p = {_cell(corr["p_value"], ".2g")})'
              f'; means: strict {corr["strict_mean"]:.1%}, graded {corr["graded_mean"]:.3f}, '
              f'NLC2CMD {corr["nlc2cmd_mean"]:.3f}.', '',
              '| tool | n | ' + ' | '.join(LABELS[m] for m in MEASURES) + ' |',
              '|---|---|' + '---|' * len(MEASURES)]
    for tool, entry in corr['per_tool'].items():
      lines.append(f'| {tool} | {entry["n"]} | {entry["strict"]:.1%} | {entry["graded"]:.3f} | '
                   f'{entry["nlc2cmd"]:.3f} |')
  return '\n'.join(lines) + '\n'


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
  table = degradations(records)
  corr = correlation(builder.read_source(), read_rows(pathlib.Path(FLAGS.rows))) \
      if FLAGS.rows else None
  prefix = pathlib.Path(FLAGS.output)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  text = markdown(table, corr)
  history.write_json_atomic(prefix.with_suffix('.json'), {
      'tasks': len(records), 'references': table['reference']['n'], 'degradations': table,
      'correlation': corr, 'rows': FLAGS.rows})
  history.write_text_atomic(prefix.with_suffix('.md'), text)
  print(text)
  print(f'written: {prefix}.json, {prefix}.md')


if __name__ == '__main__':
  app.run(main)
