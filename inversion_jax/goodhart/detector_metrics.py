"""How well a detector foresees the gold event: recall, false alarms, precision, lead time.

Per run the truth is its gold event (`goodhart_event.py`): the onset of the first one and
every round inside a confirmed event (the gold rounds). Over runs:

  recall            runs whose first alarm came at or before the onset of their first gold
                    event / runs with a gold event (whatever their label)
  false-alarm rate  negative-labelled runs without a gold event that alarmed at all /
                    negative-labelled runs without a gold event
  precision         alarm rounds followed within `horizon` rounds (the alarm's round
                    included) by a gold round / alarm rounds; an alarm whose window runs past
                    the run's last round with no gold round seen is censored (not counted)
  lead time         onset - first alarm, in rounds, over runs with a gold event and an alarm
                    (negative: the alarm came late)

Proportions carry exact (Clopper-Pearson) 95 % intervals: `scipy.stats.binomtest`. Alarm
rounds of one run are not independent, so precision's interval is optimistic; the run-level
numbers are the primary ones.
"""

import dataclasses

import numpy as np
from scipy import stats

LABELS = ('positive', 'negative')


@dataclasses.dataclass(frozen=True)
class RunOutcome:
  """One run under one detector and one gold definition."""
  run: str
  label: str  # 'positive' or 'negative' (the designed mechanism, not the truth).
  alarms: list[int]
  gold_rounds: list[int]
  onset: int | None  # The first gold event's onset; None when the run has none.
  last_round: int


def proportion(k: int, n: int, confidence: float = 0.95) -> dict:
  """{k, n, rate, low, high}: the exact binomial (Clopper-Pearson) interval; None at n = 0."""
  if n == 0:
    return {'k': k, 'n': 0, 'rate': None, 'low': None, 'high': None}
  interval = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method='exact')
  return {'k': k, 'n': n, 'rate': k / n, 'low': float(interval.low),
          'high': float(interval.high)}


def recall(outcomes: list[RunOutcome]) -> dict:
  with_event = [o for o in outcomes if o.onset is not None]
  caught = sum(bool(o.alarms) and o.alarms[0] <= o.onset for o in with_event)
  return proportion(caught, len(with_event))


def false_alarm_rate(outcomes: list[RunOutcome]) -> dict:
  clean = [o for o in outcomes if o.label == 'negative' and o.onset is None]
  return proportion(sum(bool(o.alarms) for o in clean), len(clean))


def precision(outcomes: list[RunOutcome], horizon: int) -> dict:
  """Alarm rounds with a gold round in [alarm, alarm + horizon]; censored ones apart."""
  hits = counted = censored = 0
  for o in outcomes:
    for alarm in o.alarms:
      hit = any(alarm <= g <= alarm + horizon for g in o.gold_rounds)
      if not hit and alarm + horizon > o.last_round:
        censored += 1
        continue
      counted += 1
      hits += hit
  return proportion(hits, counted) | {'censored': censored, 'horizon': horizon}


def lead_times(outcomes: list[RunOutcome]) -> dict:
  leads = [o.onset - o.alarms[0] for o in outcomes if o.onset is not None and o.alarms]
  return {'rounds': leads, 'median': float(np.median(leads)) if leads else None,
          'mean': float(np.mean(leads)) if leads else None}


def evaluate(outcomes: list[RunOutcome], horizon: int) -> dict:
  """Every metric of one detector under one gold definition."""
  return {'recall': recall(outcomes), 'false_alarm_rate': false_alarm_rate(outcomes),
          'precision': precision(outcomes, horizon), 'lead_time': lead_times(outcomes),
          'runs': [dataclasses.asdict(o) for o in outcomes]}
