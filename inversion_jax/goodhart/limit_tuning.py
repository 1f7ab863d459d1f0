"""Limits tuned on labelled runs: per signal, the limit that catches the most with no false alarm.

PREREGISTRATION.md §8. For each label-free signal alone, over one mechanism's positives and
the negatives: the limit that maximises run-level recall (`detector_metrics.recall`: an
alarm at or before the onset of the run's first gold event, under `reference`) with no
false alarm among the negative runs without a gold event; ties go to the largest limit
(the fewest alarms on runs not seen).

The candidates are the values the signal's change from its baseline took in its gaming
direction over those runs' rounds, measured as the detectors measure it (round 1 BEFORE's
values, `limits.past`: past when the change strictly exceeds the limit). A limit at a value
seen alarms on the rounds that went further; a limit between two values seen alarms as the
lower one does, so the values seen name every choice the data can tell apart but one (a
limit below them all, which alarms at any movement). A signal that never moved in its gaming
direction keeps its registered limit: the data say nothing of it.
"""

import dataclasses

from inversion_jax.errors import UserError
from inversion_jax.goodhart import detector_metrics
from inversion_jax.goodhart import detectors
from inversion_jax.goodhart import early_warning
from inversion_jax.goodhart import goodhart_event
from inversion_jax.goodhart import limits as limits_lib

_NO_ALARM = detectors.Detector('none', lambda rounds: [])


def gaming_changes(rounds: list[dict], name: str, direction: str) -> list[float]:
  """The signal's change from round 1 BEFORE's value, signed so the gaming direction is +."""
  if not rounds:
    return []
  start = early_warning.baseline(rounds[0].get('metrics') or {}).get(name)
  start = 0.0 if start is None else start  # As `limits.past` reads a missing baseline.
  out = []
  for record in rounds:
    now = detectors.signal_values(record).get(name)
    if now is not None:
      change = now - start
      out.append(change if direction == 'up' else -change)
  return out


def _measure(runs, templates, name: str, direction: str, limit: float) -> tuple[dict, dict]:
  """(recall, false-alarm rate) of the signal alone at `limit` over `runs`."""
  one = {name: (direction, limit)}
  outcomes = [dataclasses.replace(t, alarms=detectors.signal_alarms(run.rounds, one))
              for run, t in zip(runs, templates)]
  return detector_metrics.recall(outcomes), detector_metrics.false_alarm_rate(outcomes)


def tune_signal(runs, templates, name: str, direction: str, default: float) -> dict:
  """One signal's record: its limit, recall and false alarms there, candidates, and why."""
  candidates = sorted({v for run in runs for v in gaming_changes(run.rounds, name, direction)
                       if v > 0})
  record = {'direction': direction, 'default': default, 'candidates': len(candidates)}
  if not candidates:
    caught, false = _measure(runs, templates, name, direction, default)
    return record | {'limit': default, 'tuned': False, 'recall': caught,
                     'false_alarm_rate': false,
                     'why': f'never moved {direction} from its baseline in these runs (or was '
                            'not stored): keeps the registered limit'}
  best = None
  for limit in candidates:  # Ascending: `>=` moves a tie to the larger limit.
    caught, false = _measure(runs, templates, name, direction, limit)
    if false['k'] == 0 and (best is None or caught['k'] >= best[1]['k']):
      best = (limit, caught, false)
  # The largest value seen alarms nowhere (strictly past), so `best` is always set.
  limit, caught, false = best
  if caught['k']:
    why = (f'the largest of {len(candidates)} values seen that catches the most runs with a '
           f'gold event in time ({caught["k"]} of {caught["n"]}) with no false alarm')
  else:
    why = (f'none of {len(candidates)} values seen catches a gold event in time without a '
           'false alarm; the largest, which alarms on none of these runs')
  return record | {'limit': limit, 'tuned': True, 'recall': caught, 'false_alarm_rate': false,
                   'why': why}


def tune(runs, delta: float, table: dict | None = None, reference: str = 'best') -> dict:
  """{'table': {signal: (direction, limit)} (for `limits.check_table`), 'signals': records}.

  `runs`: `detectors.Run`s, positives of one mechanism and negatives; the directions and
  the registered limits come from `table` (default `limits.LIMITS`).
  """
  goodhart_event.check_delta(delta)
  table = limits_lib.check_table(limits_lib.LIMITS if table is None else table)
  for run in runs:
    if run.label not in detector_metrics.LABELS:
      raise UserError(f'{run.name}: label {run.label!r}; use positive or negative')
  templates = [detectors.outcome(run, _NO_ALARM, delta, reference) for run in runs]
  if not any(t.onset is not None for t in templates):
    raise UserError(f'no run has a gold event (delta {delta}, reference {reference}): there '
                    'is no recall to tune on; give positives whose quality fell')
  if not any(t.label == 'negative' and t.onset is None for t in templates):
    raise UserError('no negative run without a gold event: a false alarm cannot be counted; '
                    'give --negative runs')
  signals = {name: tune_signal(runs, templates, name, direction, default)
             for name, (direction, default) in table.items()}
  return {'table': {name: (s['direction'], s['limit']) for name, s in signals.items()},
          'signals': signals}
