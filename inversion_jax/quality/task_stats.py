"""Held-out figures with the task variance in them: per (task, seed), bootstrap intervals.

A held-out mean is a mean over a fixed sample of tasks, and every run of a study shares
that sample; an interval over seeds alone (a t interval over 3 run means) leaves out how
much the figure would move on other tasks. Here the unit is (task, seed): each run's held-out
rows (`rows/round_NNN_heldout.jsonl`, round 0 = the base model) give one value per task and
measure, and

  - an arm's figure is the mean over its tasks x seeds, with a 95 % percentile interval
    from a bootstrap that resamples tasks and, when the arm has several seeds, seeds too
    (two-way: the same resampled tasks in every resampled seed); with one seed it is
    `scipy.stats.bootstrap` over tasks;
  - a difference between two arms is computed pairwise, task by task on the same seeds
    (arm B's value minus arm A's for the same task and seed), and bootstrapped the same way,
    with the sign of the difference per seed.

Measures: `metrics.HELDOUT_ROWS` keys read from each row (`quality` and `strict` from the
verdict, `nlc2cmd` from the row, recomputed from the row's command and the held-out
references when a row predates it). Everything is recomputed from the rows, so any figure
can be traced to its tasks.
"""

import dataclasses
import pathlib
import re
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from inversion_jax.errors import UserError
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.quality import nlc2cmd
from inversion_jax.records import files

CONFIDENCE = 0.95
RESAMPLES = 2000
_ROUND_FILE = re.compile(rf'round_(\d{{3}})_{metrics_lib.HELDOUT_PHASE}\.jsonl$')


@dataclasses.dataclass(frozen=True)
class Interval:
  mean: float
  low: float
  high: float
  tasks: int
  seeds: int

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


def row_value(row: dict, key: str, references: Mapping[str, Sequence[str]] | None = None):
  """One held-out row's value of a measure (None when it cannot be had)."""
  if key == 'quality':
    return float(row['verdict']['quality'])
  if key == 'strict':
    return float(bool(row['verdict']['ok']))
  if key in row:
    return float(row[key])
  if key == 'nlc2cmd' and references and row.get('id') in references:
    return nlc2cmd.score(row.get('command') or '', references[row['id']])
  return None


def heldout_rounds(run_dir) -> list[int]:
  """The rounds whose held-out rows a run kept (0 = the base model), ascending."""
  directory = pathlib.Path(run_dir) / files.ROWS_SUBDIR
  found = [int(m.group(1)) for p in directory.glob('*.jsonl')
           if (m := _ROUND_FILE.search(p.name))] if directory.is_dir() else []
  return sorted(found)


def per_task(run_dir, round_index: int, keys: Sequence[str],
             references: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict]:
  """{measure: {task id: value}} of one round's held-out rows."""
  path = files.rows_path(run_dir, round_index, metrics_lib.HELDOUT_PHASE)
  try:
    rows = files.read_rows(path)
  except (OSError, ValueError) as error:
    raise UserError(f'cannot read the held-out rows {path} ({error})') from None
  out = {}
  for key in keys:
    values = {row['id']: row_value(row, key, references) for row in rows if 'id' in row}
    if values and None not in values.values():
      out[key] = values
  return out


def run_changes(run_dir, keys: Sequence[str],
                references: Mapping[str, Sequence[str]] | None = None,
                last_rounds: int = 1) -> dict[str, dict]:
  """{measure: {'base', 'last', 'change': {task: value}}}: base model -> the last evaluated
  round (or, per task, the mean of the last `last_rounds` evaluated rounds: a late effect
  averaged over several evaluations), on the tasks all of them evaluated; {} when the run
  kept no held-out rows past round 0."""
  if last_rounds < 1:
    raise UserError(f'last_rounds must be at least 1, got {last_rounds}')
  found = heldout_rounds(run_dir)
  if len(found) < 2 or found[0] != 0:
    return {}
  base = per_task(run_dir, 0, keys, references)
  lasts = [per_task(run_dir, r, keys, references) for r in found[1:][-last_rounds:]]
  out = {}
  for key in keys:
    if key in base and all(key in last for last in lasts):
      tasks = sorted(set(base[key]).intersection(*(set(last[key]) for last in lasts)))
      late = {t: float(np.mean([last[key][t] for last in lasts])) for t in tasks}
      out[key] = {'base': {t: base[key][t] for t in tasks}, 'last': late,
                  'change': {t: late[t] - base[key][t] for t in tasks},
                  'round': found[-1], 'rounds': found[1:][-last_rounds:]}
  return out


def matrix(per_seed: Mapping[object, Mapping[str, float]]) -> tuple[np.ndarray, list[str]]:
  """values[task, seed] over the tasks every seed has; the task ids in row order."""
  seeds = list(per_seed)
  tasks = sorted(set.intersection(*(set(per_seed[s]) for s in seeds))) if seeds else []
  if not tasks:
    raise UserError('the runs share no held-out task; compare runs evaluated on one split')
  return np.array([[per_seed[s][t] for s in seeds] for t in tasks], np.float64), tasks


def bootstrap(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
  """Mean of values[task, seed] with a 95 % percentile interval over tasks (and seeds)."""
  values = np.asarray(values, np.float64)
  if values.ndim == 1:
    values = values[:, None]
  tasks, seeds = values.shape
  mean = float(values.mean())
  if tasks < 2:
    return Interval(mean, mean, mean, tasks, seeds)
  rng = np.random.default_rng(seed)
  if seeds == 1:
    result = stats.bootstrap((values[:, 0],), np.mean, n_resamples=resamples,
                             confidence_level=CONFIDENCE, method='percentile', random_state=rng)
    low, high = result.confidence_interval
  else:
    task_draws = rng.integers(0, tasks, (resamples, tasks))
    seed_draws = rng.integers(0, seeds, (resamples, seeds))
    means = np.array([values[np.ix_(t, s)].mean() for t, s in zip(task_draws, seed_draws)])
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
  # A constant sample has a zero-width interval; float sums may miss it by an ulp.
  low, high = min(float(low), mean), max(float(high), mean)
  return Interval(mean, low, high, tasks, seeds)


def paired_difference(a: Mapping[object, Mapping[str, float]],
                      b: Mapping[object, Mapping[str, float]],
                      resamples: int = RESAMPLES, seed: int = 0) -> dict:
  """Arm b minus arm a, per (task, seed) on their common seeds and tasks, bootstrapped.

  Args:
    a, b: {seed: {task id: value}} of each arm.
  Returns:
    {'interval': Interval, 'seeds': [...], 'per_seed': [mean difference per seed],
     'signs': '+', '-' or '0' per seed}.
  """
  seeds = [s for s in a if s in b]
  if not seeds:
    raise UserError(f'the arms share no seed (seeds {sorted(a)} vs {sorted(b)}); a paired '
                    'comparison needs runs on the same seeds')
  differences = {s: {t: b[s][t] - a[s][t] for t in set(a[s]) & set(b[s])} for s in seeds}
  values, _ = matrix(differences)
  per_seed = [float(v) for v in values.mean(axis=0)]
  signs = ''.join('+' if d > 0 else '-' if d < 0 else '0' for d in per_seed)
  return {'interval': bootstrap(values, resamples, seed), 'seeds': seeds,
          'per_seed': per_seed, 'signs': signs}


def _interval(cell: dict, spec: str = '+.3f') -> str:
  return f'{cell["mean"]:{spec}} [{cell["low"]:{spec}}, {cell["high"]:{spec}}]'


def markdown(result: dict) -> str:
  """Tables of a per (task, seed) comparison ({'arms', 'differences'}, JSON form)."""
  if not result['arms']:
    return ('No held-out rows past the base model in these runs: no per-task statistics '
            '(run with --eval_every, or experiments/evaluate_quality.py).\n')
  labels = {m.key: m.label for m in metrics_lib.HELDOUT_ROWS}
  lines = ['Held-out measures per (task, seed): mean [95 % paired bootstrap over tasks and '
           'seeds], base model -> last evaluated round.', '',
           '| group | measure | tasks x seeds | base | last | change |',
           '|---|---|---|---|---|---|']
  for label, measures in result['arms'].items():
    for key, parts in measures.items():
      change = parts['change']
      lines.append(f'| {label} | {labels.get(key, key)} | {change["tasks"]} x {change["seeds"]}'
                   f' | {_interval(parts["base"], ".3f")} | {_interval(parts["last"], ".3f")}'
                   f' | {_interval(change)} |')
  if result['differences']:
    lines += ['', 'Differences of the change, task by task on the same seeds:', '',
              '| difference | measure | tasks x seeds | mean [95 % CI] | sign per seed (seeds) |',
              '|---|---|---|---|---|']
    for name, measures in result['differences'].items():
      for key, paired in measures.items():
        interval = paired['interval']
        lines.append(f'| {name} | {labels.get(key, key)} | {interval["tasks"]} x '
                     f'{interval["seeds"]} | {_interval(interval)} | {paired["signs"]} '
                     f'({", ".join(str(s) for s in paired["seeds"])}) |')
  return '\n'.join(lines) + '\n'
