"""The run's JSON record: progress.json after every round, results JSON at the end.

Files are replaced atomically (temp file, fsync, rename) so a crash never leaves a
half-written record behind. `progress.json` holds `config`, `seed`, `cycles_completed` and
`history.cycles` (one record per round: flat `phase/metric` values, see `metrics.py`, plus
the original's per-cycle fields), with the original's other names beside them
(`original_format.py`). `rounds_of` also reads the older shape (`history` a list).
"""

import dataclasses
import errno
import json
import math
import os
from pathlib import Path
import tempfile

import numpy as np

from inversion_jax.errors import OutputError, UserError
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.records import original_format

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


def write_text_atomic(path: str | Path, text: str) -> Path:
  """Writes `text` to `path` so readers see the old or the new file, never half.

  The file gets the mode a plain `open` would give (0666 less the umask; mkstemp's 0600
  would hide results from a group). A failed write (full disk, no permission) is a
  `UserError` naming the file; the old file, if any, is untouched.
  """
  path = Path(path).expanduser()
  tmp_name = None
  try:
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    with os.fdopen(fd, 'w') as tmp:
      tmp.write(text)
      tmp.flush()
      os.fchmod(tmp.fileno(), 0o666 & ~current_umask())
      os.fsync(tmp.fileno())
    os.replace(tmp_name, path)
  except OSError as error:
    raise write_error(path, error) from error
  finally:
    if tmp_name is not None and Path(tmp_name).exists():
      Path(tmp_name).unlink(missing_ok=True)
  return path


def current_umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_error(path: str | Path, error: OSError) -> OutputError:
  """The one line for a file that could not be written, with what to do."""
  if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
    advice = 'the disk is full: free space'
  elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    advice = 'no permission: choose a writable directory'
  elif error.errno in (errno.ENOENT, errno.ENOTDIR):
    advice = 'no file can be made there: check that its directory exists, or choose another path'
  else:
    advice = 'check the path and the disk'
  return OutputError(f'cannot write {path} ({error.strerror or error}); {advice}')


def read_json(path: str | Path, advice: str, kind: type = dict):
  """A JSON file's value, or a `UserError` naming the file and `advice` when it is missing,
  unreadable, not JSON, or not a `kind` (a file cut short or edited by hand)."""
  path = Path(path)
  try:
    value = json.loads(path.read_bytes())
  except FileNotFoundError as error:
    raise UserError(f'{path} does not exist; {advice}') from error
  except OSError as error:
    raise UserError(f'cannot read {path} ({error.strerror or error}); {advice}') from error
  except ValueError as error:  # JSONDecodeError and UnicodeDecodeError.
    raise UserError(f'{path} is not valid JSON ({error}); {advice}') from error
  if not isinstance(value, kind):
    raise UserError(f'{path} holds a JSON {type(value).__name__}, not the expected '
                    f'{kind.__name__}; {advice}')
  return value


def check_output_file(path: str | Path) -> Path:
  """Refuses an output file that could not be written, before any work is done: its
  directory must exist and be writable, and the path must not be a directory."""
  path = Path(path).expanduser()
  parent = path.parent
  if path.is_dir():
    raise UserError(f'output {path} is a directory; give a file path')
  if not parent.is_dir():
    raise UserError(f'cannot write {path}: the directory {parent} does not exist; create it '
                    'or choose another path')
  try:  # A real write: access() says yes to root, and on /proc or a read-only mount.
    with tempfile.TemporaryFile(prefix=f'.{path.name}.', dir=parent):
      pass
  except OSError as error:
    raise write_error(path, error) from None
  return path


def write_json_atomic(path: str | Path, obj) -> Path:
  """`obj` as indented JSON, atomically."""
  return write_text_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + '\n')


ROWS_SUBDIR = 'rows'


def rows_path(directory: str | Path, round_index: int, phase: str) -> Path:
  return Path(directory) / ROWS_SUBDIR / f'round_{round_index:03d}_{phase}.jsonl'


def write_rows(directory: str | Path, round_index: int, phase: str, rows) -> Path:
  """Every row of one phase as JSON lines, replaced atomically (a redone round overwrites)."""
  path = rows_path(directory, round_index, phase)
  path.parent.mkdir(parents=True, exist_ok=True)
  return write_text_atomic(path, ''.join(json.dumps(jsonable(row), allow_nan=False) + '\n'
                                         for row in rows))


def read_rows(path: str | Path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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


def _round_seconds(record: dict) -> float:
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
      'total_seconds': sum(_round_seconds(r) for r in rounds),
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


def format_round_table(record: dict, previous: dict | None = None) -> str:
  """A short fixed-width console table for one round.

  Held-out lines compare with the last evaluation before this round: the base model
  (stored with round 1) or `previous`, the prior round's record.
  """
  get, fmt = metrics_lib.get, metrics_lib.fmt
  if record.get('train_skipped_reason'):
    loss = f'skipped ({record["train_skipped_reason"]})'
  else:
    loss = (f'{fmt(get(record, "train", "final_loss"), ".4f")} on '
            f'{int(get(record, "train", "num_examples") or 0)} examples')
  rows = [f'{"round " + str(record.get("cycle", "?")):<24}{"before":>8} {"after":>8}'
          f' {"delta":>8}']
  for metric in metrics_lib.ROUND_ROWS:
    before, after = get(record, 'before', metric.key), get(record, 'after', metric.key)
    if before is None and after is None:
      continue
    delta = None if before is None or after is None else after - before
    rows.append(f'  {metric.label:<22}{fmt(before, metric.spec):>8} {fmt(after, metric.spec):>8}'
                f' {fmt(delta, "+" + metric.spec):>8}')
  if record.get('after_skipped_reason'):
    rows.append(f'  after       skipped ({record["after_skipped_reason"]})')
  rows.append(f'  train loss  {loss}')
  if get(record, metrics_lib.BASE_PHASE, 'quality') is not None:
    earlier, label = (record, metrics_lib.BASE_PHASE), 'base'
  elif previous is not None and get(previous, metrics_lib.HELDOUT_PHASE, 'quality') is not None:
    earlier, label = (previous, metrics_lib.HELDOUT_PHASE), f'round {previous.get("cycle")}'
  else:
    earlier, label = None, ''
  if get(record, metrics_lib.HELDOUT_PHASE, 'quality') is not None:
    count = int(get(record, metrics_lib.HELDOUT_PHASE, 'num_graded') or 0)
    rows.append(f'  {"held-out (" + str(count) + " tasks, greedy)":<22}{label:>8} {"now":>8}'
                + (f' {"delta":>8}' if earlier else ''))
    for metric in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS:
      now = get(record, metrics_lib.HELDOUT_PHASE, metric.key)
      was = get(earlier[0], earlier[1], metric.key) if earlier else None
      line = f'    {metric.label:<20}{fmt(was, metric.spec) if earlier else "":>8} '
      line += f'{fmt(now, metric.spec):>8}'
      if was is not None and now is not None:
        line += f' {fmt(now - was, "+" + metric.spec):>8}'
      rows.append(line)
  score = get(record, 'signal', 'score')
  if score is not None:
    reasons = record.get('early_warning') or []
    rows.append(f'  early warning  {int(score)} label-free signal(s) past their limits'
                + (': ' + '; '.join(reasons) if reasons else ''))
  timings = record.get('timings') or {}
  times = '  '.join(f'{k} {v:.1f}s' for k, v in timings.items() if k != 'total')
  rows.append(f'  time        {times}  total {_round_seconds(record):.1f}s'.rstrip())
  return '\n'.join(rows)


def format_summary(history: RunHistory) -> str:
  """A few console lines for the whole run."""
  s = summarize(history.rounds)
  if not s['cycles_completed']:
    return 'no rounds completed'
  fmt = metrics_lib.fmt
  lines = [
      f'rounds completed  {s["cycles_completed"]} (seed {history.seed})',
      f'mean score        {fmt(s["first_before_mean_score"], ".3f")} -> '
      f'{fmt(s["last_after_mean_score"], ".3f")} '
      f'({fmt(s["score_relative_change_pct"], "+.1f")}%)',
      f'acceptance        {fmt(s["first_before_acceptance"], ".1%")} -> '
      f'{fmt(s["last_after_acceptance"], ".1%")}',
      f'train loss        {fmt(s["first_train_loss"], ".3f")} -> '
      f'{fmt(s["last_train_loss"], ".3f")}',
  ]
  if 'heldout_quality_first' in s:
    lines.append(
        f'real quality      {fmt(s["heldout_quality_first"], ".3f")} (round '
        f'{s["heldout_quality_first_round"]}) -> {fmt(s["heldout_quality_last"], ".3f")} (round '
        f'{s["heldout_quality_last_round"]}) ({fmt(s.get("quality_relative_change_pct"), "+.1f")}%)'
        f', strict {fmt(s["heldout_strict_first"], ".1%")} -> {fmt(s["heldout_strict_last"], ".1%")}')
    for metric in metrics_lib.HELDOUT_ROWS:
      if metric.key not in ('quality', 'strict') and f'heldout_{metric.key}_first' in s:
        lines.append(f'{metric.label:<18}{fmt(s[f"heldout_{metric.key}_first"], metric.spec)} -> '
                     f'{fmt(s[f"heldout_{metric.key}_last"], metric.spec)}')
    gap = s['goodhart_gap']
    lines.append(f'goodhart gap      {fmt(None if gap is None else 100 * gap, "+.1f")} points'
                 ' (score change - real quality change)')
  lines += [f'tokens generated  {s["total_tokens_generated"]:,}',
            f'total time        {s["total_seconds"]:.1f}s']
  return '\n'.join(lines)
