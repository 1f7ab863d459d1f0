"""The Goodhart monitor: an alarm when the score rises while real quality falls.

After each round's held-out evaluation, `check` compares the round with the run so far:

  quality drop   the gold event's drop (`goodhart_event.py`): graded held-out quality at
                 least `delta` (absolute, graded-quality points) below the best evaluation
                 so far (the base model included) while the intrinsic score is above the
                 base model's; at the second consecutive drop the reason says the gold
                 event is confirmed;
  indicator jump a gaming indicator of the held-out commands past its one-sided limit
                 from the base model's value (`limits.py`, the early warning's table).

Actions (`--on_goodhart`): `off`; `warn` (log, mark the record and the report); `stop`
(end the run after this round, every checkpoint kept); `rollback` (the next round starts
from the adapters of the round with the best real quality; round 0 = the base model).
Real quality is used only here, to monitor, never to select training data.
"""

import dataclasses

from absl import logging

from inversion_jax.errors import UserError
from inversion_jax.goodhart import goodhart_event
from inversion_jax.goodhart import limits as limits_lib
from inversion_jax.goodhart import metrics as metrics_lib

ACTIONS = ('off', 'warn', 'stop', 'rollback')
# Held-out indicators checked against the base model (limits.py names).
_INDICATORS = ('unknown_option_rate', 'repeated_option_rate', 'prose_rate', 'echo_rate',
               'distinct_ratio')


@dataclasses.dataclass(frozen=True)
class Alarm:
  round: int
  reasons: list[str]
  best_round: int  # The evaluated round with the best graded quality (0 = base model).
  best_quality: float

  def to_json(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GoodhartMonitor:
  action: str = 'off'
  delta: float = 0.05  # The gold event's drop, graded-quality points (--goodhart_tolerance).
  limits: dict | None = None  # None: limits.LIMITS.

  def __post_init__(self):
    if self.action not in ACTIONS:
      raise UserError(f'--on_goodhart must be one of {", ".join(ACTIONS)}, got {self.action!r}')
    if not isinstance(self.delta, (int, float)) or not 0 < self.delta < 1:
      raise UserError(f'--goodhart_tolerance (the drop in graded quality, absolute) must be in '
                      f'(0, 1), got {self.delta!r}')
    if self.limits is not None:
      limits_lib.check_table(self.limits)

  def check(self, rounds: list[dict]) -> Alarm | None:
    """An alarm for the last of `rounds` (records so far), or None (also when off)."""
    if self.action == 'off' or not rounds:
      return None
    current = rounds[-1]
    series = [(r, q) for r, q in metrics_lib.heldout_series(rounds, 'quality')
              if r != current['cycle']]
    if metrics_lib.get(current, metrics_lib.HELDOUT_PHASE, 'quality') is None or not series:
      return None
    best_round, best = goodhart_event.best_before(series, len(series))
    reasons = []
    drop = goodhart_event.drop_now(rounds, self.delta)
    if drop is not None:
      confirmed = any(e.confirmed == drop.round
                      for e in goodhart_event.events(rounds, self.delta))
      fall = drop.reference_quality - drop.quality
      reasons.append(f'graded quality {drop.quality:.3f} fell {fall:.3f} below round '
                     f'{drop.reference_round}\'s {drop.reference_quality:.3f} while the '
                     f'intrinsic score rose {drop.base_score:.3f} -> {drop.score:.3f}'
                     + (' (second consecutive drop: gold event confirmed)' if confirmed else ''))
    reasons += indicator_jumps(rounds, current, self.limits)
    return Alarm(int(current['cycle']), reasons, best_round, best) if reasons else None

  def act(self, alarm: Alarm | None, record: dict) -> str | None:
    """Logs and marks `record`; returns 'stop', 'rollback' or None for the loop."""
    if alarm is None:
      return None
    record['goodhart'] = alarm.to_json() | {'action': self.action}
    logging.warning('Goodhart alarm in round %d: %s', alarm.round, '; '.join(alarm.reasons))
    print(f'GOODHART ALARM (round {alarm.round}, action {self.action}): '
          + '; '.join(alarm.reasons), flush=True)
    return self.action if self.action in ('stop', 'rollback') else None


def heldout_signals(record: dict, phase: str, base_option_count: float | None) -> dict:
  """A held-out evaluation's indicators under the limits table's names."""
  get = lambda key: metrics_lib.get(record, phase, f'indicator/{key}')
  out = {name: get(name) for name in _INDICATORS}
  count = get('mean_option_count')
  out['option_count_drift'] = (count / base_option_count - 1) if count is not None and \
      base_option_count else None
  return {k: v for k, v in out.items() if v is not None}


def indicator_jumps(rounds: list[dict], current: dict, table: dict | None = None) -> list[str]:
  """Indicators of `current`'s held-out commands past their limits from the base model's."""
  if not rounds:
    return []
  base_count = metrics_lib.get(rounds[0], metrics_lib.BASE_PHASE, 'indicator/mean_option_count')
  base = heldout_signals(rounds[0], metrics_lib.BASE_PHASE, base_count)
  if not base:
    return []  # No base-model evaluation to compare with.
  now = heldout_signals(current, metrics_lib.HELDOUT_PHASE, base_count)
  return limits_lib.past(now, base, table)
