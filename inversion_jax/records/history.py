"""The run's JSON record: progress.json after every round, results JSON at the end.

`progress.json` holds `config`, `seed`, `cycles_completed` and `history.cycles` (one record
per round: flat `phase/metric` values, see `metrics.py`, plus the original's per-cycle
fields), with the original's other names beside them (`original_format.py`). `rounds_of`
also reads the older shape (`history` a list). Written with `files.write_json_atomic`.
"""

import dataclasses
from pathlib import Path

from inversion_jax.errors import UserError
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.records import original_format
from inversion_jax.records.files import jsonable, read_json, write_json_atomic

PROGRESS_FILE = 'progress.json'
RESULTS_FILE = 'self_improvement_results.json'


@dataclasses.dataclass
class RunHistory:
  """Run config, seed and one record (a plain dict) per completed round."""

  config: dict
  seed: int
  rounds: list[dict] = dataclasses.field(default_factory=list)

  def add_round(self, record: dict):
    self.rounds.append(jsonable(record))

  def to_progress(self) -> dict:
    """Ours (config, seed, cycles_completed) and the original's names (last_completed_cycle,
    timestamp, history.cycles / total_generated / total_accepted / config)."""
    config = jsonable(self.config)
    return {'config': config, 'seed': self.seed, 'cycles_completed': len(self.rounds),
            'last_completed_cycle': self.rounds[-1]['cycle'] if self.rounds else 0,
            'timestamp': original_format.timestamp(),
            'history': original_format.history_block(config, self.rounds)}

  def save_progress(self, directory: str | Path) -> Path:
    return write_json_atomic(Path(directory) / PROGRESS_FILE, self.to_progress())

  def save_results(self, directory: str | Path) -> Path:
    """The summary and progress.json's fields, and at the top the original's results
    (its `history` block: cycles, total_generated, total_accepted, config)."""
    progress = self.to_progress()
    results = {'summary': summarize(self.rounds), 'run_config': progress['config']} | progress
    results |= progress['history']  # Its `config` holds ours plus the original's names.
    return write_json_atomic(Path(directory) / RESULTS_FILE, results)


def rounds_of(progress: dict) -> list[dict]:
  """The round records of a progress.json, in its current shape or the older one (a list)."""
  history = progress['history']
  return list(history['cycles'] if isinstance(history, dict) else history)


PROGRESS_ADVICE = ('the loop rewrites it from the checkpoints: rerun self_improve.py with the '
                   'same flags and --resume')


def read_progress(path: str | Path) -> dict:
  """A progress.json checked for the shape readers rely on (a record per round, each with
  its `cycle` and a `metrics` object), or a `UserError` saying how to rebuild it."""
  progress = read_json(path, PROGRESS_ADVICE)
  try:
    records = rounds_of(progress)
    ok = all(isinstance(r, dict) and isinstance(r.get('cycle'), int)
             and isinstance(r.get('metrics', {}), dict) for r in records)
  except (KeyError, TypeError):
    ok = False
  if not ok or not isinstance(progress.get('config', {}), dict):
    raise UserError(f'{path} does not hold a run\'s rounds (wrong or missing fields); '
                    + PROGRESS_ADVICE)
  return progress


def round_seconds(record: dict) -> float:
  timings = record.get('timings') or {}
  return float(timings['total'] if 'total' in timings else sum(timings.values()))


def summarize(rounds: list[dict]) -> dict:
  """Base model -> last round: intrinsic score, acceptance, loss, real quality, the gap."""
  if not rounds:
    return {'cycles_completed': 0}
  first, last = rounds[0], rounds[-1]
  get = metrics_lib.get
  start, end = get(first, 'before', 'mean_score'), get(last, 'after', 'mean_score')  # n/a:
  # a last round without AFTER (a run stopped early under --after_every) has no later BEFORE.
  losses = [get(r, 'train', 'final_loss') for r in rounds]
  losses = [loss for loss in losses if loss is not None]
  summary = {
      'cycles_completed': len(rounds),
      'first_before_mean_score': start,
      'last_after_mean_score': end,
      'score_relative_change_pct': _pct(metrics_lib.relative_change(start, end)),
      'first_before_acceptance': get(first, 'before', 'acceptance_rate'),
      'last_after_acceptance': get(last, 'after', 'acceptance_rate'),
      'first_train_loss': losses[0] if losses else None,
      'last_train_loss': losses[-1] if losses else None,
      'total_tokens_generated': int(sum(
          (get(r, p, 'tokens_generated') or 0) for r in rounds for p in ('before', 'after'))),
      'total_seconds': sum(round_seconds(r) for r in rounds),
  }
  for metric in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS:
    series = metrics_lib.heldout_series(rounds, metric.key)
    if series:
      summary[f'heldout_{metric.key}_first'] = series[0][1]
      summary[f'heldout_{metric.key}_last'] = series[-1][1]
      summary[f'heldout_{metric.key}_first_round'] = series[0][0]
      summary[f'heldout_{metric.key}_last_round'] = series[-1][0]
  series = metrics_lib.heldout_series(rounds, 'quality')
  if series:
    summary['quality_relative_change_pct'] = _pct(
        metrics_lib.relative_change(series[0][1], series[-1][1]))
  summary['goodhart_gap'] = metrics_lib.goodhart_gap(rounds)
  return summary


def _pct(value):
  return None if value is None else 100.0 * value
