"""The measure check: degraded references and a model's held-out commands, scored three ways.

Strict pass and graded quality from the installed validator, NLC2CMD against the task's
references (`nlc2cmd.py`). `degradations` applies every class of `degrade.py` to every
reference and reports, per class, each measure's mean and the fraction of references whose
degraded form scores below the reference itself; `correlation` ranks a model's held-out
commands by graded and by NLC2CMD (Spearman). Used by `experiments/validate_measures.py`.
Nothing here runs a command.
"""

import json
import pathlib

import numpy as np
from scipy import stats

from inversion_jax.errors import UserError
from inversion_jax.quality import degrade
from inversion_jax.quality import nlc2cmd
from inversion_jax.quality import validator

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
