"""The run's JSON record: progress.json after every round, results JSON at the end.

Files are replaced atomically (temp file, fsync, rename) so a crash never leaves a
half-written record behind. `progress.json` keeps the original's shape (`config`,
`seed`, `cycles_completed`, `history`) so existing tooling still reads it.
"""

import dataclasses
import json
import math
import os
from pathlib import Path
import tempfile

import numpy as np

from inversion_jax.errors import UserError

PROGRESS_FILE = 'progress.json'
RESULTS_FILE = 'self_improvement_results.json'


def jsonable(obj):
  """Converts numpy, JAX, dataclasses, tuples and paths to plain JSON values.

  Non-finite floats become None: JSON has no NaN, and a NaN loss means "no value".
  """
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return jsonable(dataclasses.asdict(obj))
  if isinstance(obj, dict):
    return {str(key): jsonable(value) for key, value in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(value) for value in obj]
  if isinstance(obj, Path):
    return str(obj)
  if hasattr(obj, '__array__') and not isinstance(obj, (str, bytes)):
    array = np.asarray(obj)
    return jsonable(array.item() if array.ndim == 0 else array.tolist())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_json_atomic(path: str | Path, obj) -> Path:
  """Writes `obj` as JSON to `path` so readers see the old or the new file, never half."""
  path = Path(path)
  text = json.dumps(jsonable(obj), indent=2, allow_nan=False) + '\n'
  fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
  try:
    with os.fdopen(fd, 'w') as tmp:
      tmp.write(text)
      tmp.flush()
      os.fsync(tmp.fileno())
    os.replace(tmp_name, path)
  except BaseException:
    Path(tmp_name).unlink(missing_ok=True)
    raise
  return path


@dataclasses.dataclass
class RunHistory:
  """Run config, seed and one record (a plain dict) per completed round."""

  config: dict
  seed: int
  rounds: list[dict] = dataclasses.field(default_factory=list)

  def add_round(self, record: dict):
    self.rounds.append(jsonable(record))

  def truncate(self, num_rounds: int):
    """Keeps the first `num_rounds` records (resume from the last checkpointed round)."""
    self.rounds = [r for r in self.rounds if r.get('cycle', 0) <= num_rounds]

  def to_progress(self) -> dict:
    return {'config': jsonable(self.config), 'seed': self.seed,
            'cycles_completed': len(self.rounds), 'history': self.rounds}

  def save_progress(self, directory: str | Path) -> Path:
    return write_json_atomic(Path(directory) / PROGRESS_FILE, self.to_progress())

  def save_results(self, directory: str | Path) -> Path:
    results = {'summary': summarize(self.rounds)} | self.to_progress()
    return write_json_atomic(Path(directory) / RESULTS_FILE, results)

  @classmethod
  def load(cls, directory: str | Path) -> 'RunHistory':
    """Reads progress.json back, for `--resume`."""
    path = Path(directory) / PROGRESS_FILE
    try:
      progress = json.loads(path.read_text())
      return cls(config=progress['config'], seed=progress['seed'],
                 rounds=list(progress['history']))
    except FileNotFoundError as error:
      raise UserError(f'no {PROGRESS_FILE} in {directory}: nothing to resume; drop --resume'
                      ' or point --output at an earlier run') from error
    except (OSError, ValueError, KeyError, TypeError) as error:
      raise UserError(f'{path} is unreadable ({error}); restore it or start a fresh'
                      ' --output') from error


def _get(record: dict, *keys):
  """Nested lookup that yields None for anything missing."""
  for key in keys:
    if not isinstance(record, dict) or record.get(key) is None:
      return None
    record = record[key]
  return record


def _round_seconds(record: dict) -> float:
  timings = record.get('timings') or {}
  return float(timings['total'] if 'total' in timings else sum(timings.values()))


def summarize(rounds: list[dict]) -> dict:
  """First BEFORE vs last AFTER score and acceptance, train loss, tokens, seconds."""
  if not rounds:
    return {'cycles_completed': 0}
  first, last = rounds[0], rounds[-1]
  start, end = _get(first, 'before', 'mean_score'), _get(last, 'after', 'mean_score')
  losses = [_get(r, 'train', 'final_loss') for r in rounds]
  losses = [loss for loss in losses if loss is not None]
  return {
      'cycles_completed': len(rounds),
      'first_before_mean_score': start,
      'last_after_mean_score': end,
      'score_relative_change_pct': (
          100.0 * (end - start) / abs(start) if start and end is not None else None),
      'first_before_acceptance': _get(first, 'before', 'acceptance_rate'),
      'last_after_acceptance': _get(last, 'after', 'acceptance_rate'),
      'first_train_loss': losses[0] if losses else None,
      'last_train_loss': losses[-1] if losses else None,
      'total_tokens_generated': int(sum(r.get('tokens_generated') or 0 for r in rounds)),
      'total_seconds': sum(_round_seconds(r) for r in rounds),
  }


def _num(value, spec: str) -> str:
  return 'n/a' if value is None else format(value, spec)


def format_round_table(record: dict) -> str:
  """A short fixed-width console table for one round."""
  train = record.get('train') or {}
  if train.get('skipped_reason'):
    loss = f'skipped ({train["skipped_reason"]})'
  else:
    loss = f'{_num(train.get("final_loss"), ".4f")} on {train.get("num_examples", 0)} examples'
  timings = record.get('timings') or {}
  times = '  '.join(f'{k} {v:.1f}s' for k, v in timings.items() if k != 'total')
  rows = [
      f'{"round " + str(record.get("cycle", "?")):<14}{"before":>8} {"after":>8}'
      f' {"delta":>8}',
      _row('mean score', record, 'mean_score', 'score_delta', '.3f', '+.3f'),
      _row('acceptance', record, 'acceptance_rate', 'acceptance_delta', '.1%', '+.1%'),
      f'  train loss  {loss}',
      f'  time        {times}  total {_round_seconds(record):.1f}s'.rstrip(),
  ]
  return '\n'.join(rows)


def _row(label: str, record: dict, key: str, delta_key: str, spec: str, delta_spec: str):
  before, after = _get(record, 'before', key), _get(record, 'after', key)
  delta = _get(record, 'improvement', delta_key)
  return (f'  {label:<12}{_num(before, spec):>8} {_num(after, spec):>8}'
          f' {_num(delta, delta_spec):>8}')


def format_summary(history: RunHistory) -> str:
  """A few console lines for the whole run."""
  s = summarize(history.rounds)
  if not s['cycles_completed']:
    return 'no rounds completed'
  return '\n'.join([
      f'rounds completed  {s["cycles_completed"]} (seed {history.seed})',
      f'mean score        {_num(s["first_before_mean_score"], ".3f")} -> '
      f'{_num(s["last_after_mean_score"], ".3f")} '
      f'({_num(s["score_relative_change_pct"], "+.1f")}%)',
      f'acceptance        {_num(s["first_before_acceptance"], ".1%")} -> '
      f'{_num(s["last_after_acceptance"], ".1%")}',
      f'train loss        {_num(s["first_train_loss"], ".3f")} -> '
      f'{_num(s["last_train_loss"], ".3f")}',
      f'tokens generated  {s["total_tokens_generated"]:,}',
      f'total time        {s["total_seconds"]:.1f}s',
  ])
