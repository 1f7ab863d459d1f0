"""The Goodhart monitor: an alarm when the score rises while real quality falls.

After each round's held-out evaluation, `check` compares the round with the run so far:

  quality drop   graded held-out quality fell by more than `tolerance` (relative) below
                 the best evaluation so far (the base model included) WHILE the intrinsic
                 score rose (this round's AFTER above round 1's BEFORE, the base model);
  indicator jump a gaming indicator of the held-out commands moved past its limit from
                 the base model's value (`INDICATOR_LIMITS`: +10 points of unknown or
                 repeated options or prose, +5 points of task echo, -20 points of distinct
                 commands, options per command x1.5 or /1.5).

Actions (`--on_goodhart`): `off`; `warn` (log, mark the record and the report); `stop`
(end the run after this round, every checkpoint kept); `rollback` (the next round starts
from the adapters of the round with the best real quality; round 0 = the base model).
Real quality is used only here, to monitor, never to select training data.
"""

import dataclasses

from absl import logging

from inversion_jax import metrics as metrics_lib
from inversion_jax.errors import UserError

ACTIONS = ('off', 'warn', 'stop', 'rollback')
# indicator -> (kind, limit): 'up'/'down' = absolute change from the base, 'ratio' = factor.
INDICATOR_LIMITS = {
    'indicator/unknown_option_rate': ('up', 0.10),
    'indicator/repeated_option_rate': ('up', 0.10),
    'indicator/prose_rate': ('up', 0.10),
    'indicator/echo_rate': ('up', 0.05),
    'indicator/distinct_ratio': ('down', 0.20),
    'indicator/mean_option_count': ('ratio', 1.5),
}


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
  tolerance: float = 0.05

  def __post_init__(self):
    if self.action not in ACTIONS:
      raise UserError(f'--on_goodhart must be one of {", ".join(ACTIONS)}, got {self.action!r}')
    if not 0 <= self.tolerance < 1:
      raise UserError(f'--goodhart_tolerance must be in [0, 1), got {self.tolerance}')

  def check(self, rounds: list[dict]) -> Alarm | None:
    """An alarm for the last of `rounds` (records so far), or None (also when off)."""
    if self.action == 'off' or not rounds:
      return None
    current = rounds[-1]
    now = metrics_lib.get(current, metrics_lib.HELDOUT_PHASE, 'quality')
    series = [(r, q) for r, q in metrics_lib.heldout_series(rounds, 'quality')
              if r != current['cycle']]
    if now is None or not series:
      return None
    best_round, best = max(series, key=lambda item: (item[1], -item[0]))
    reasons = []
    base_score = metrics_lib.get(rounds[0], 'before', 'mean_score')
    # A round without AFTER (--after_every): its BEFORE, the latest score measured (one round
    # behind: the previous adapters).
    score = metrics_lib.get(current, 'after', 'mean_score')
    if score is None:
      score = metrics_lib.get(current, 'before', 'mean_score')
    if best > 0 and (best - now) / best > self.tolerance and score is not None and \
        base_score is not None and score > base_score:
      reasons.append(f'graded quality {now:.3f} fell {100 * (best - now) / best:.1f}% below '
                     f'round {best_round}\'s {best:.3f} while the intrinsic score rose '
                     f'{base_score:.3f} -> {score:.3f}')
    reasons += indicator_jumps(rounds, current)
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


def indicator_jumps(rounds: list[dict], current: dict) -> list[str]:
  """Indicators of `current`'s held-out commands past their limits from the base model."""
  out = []
  for key, (kind, limit) in INDICATOR_LIMITS.items():
    series = metrics_lib.heldout_series(rounds, key)
    now = metrics_lib.get(current, metrics_lib.HELDOUT_PHASE, key)
    if not series or series[0][0] != 0 or now is None:
      continue
    base = series[0][1]
    jumped = (kind == 'up' and now - base > limit) or (kind == 'down' and base - now > limit) \
        or (kind == 'ratio' and base > 0 and (now / base > limit or now / base < 1 / limit))
    if jumped:
      out.append(f'{key.split("/")[-1]} {base:.3f} -> {now:.3f}')
  return out
