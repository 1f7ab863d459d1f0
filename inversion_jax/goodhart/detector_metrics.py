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
numbers are the primary ones. The verdict (PREREGISTRATION.md §10) reads only the run-level
intervals: `works` when recall's lower bound > 0.5 and the false-alarm rate's upper bound
< 0.5; `does not` when recall's upper bound < 0.5 or the false-alarm rate's lower bound
> 0.5; `not enough data` otherwise.
"""

import dataclasses

import numpy as np
from scipy import stats

LABELS = ('positive', 'negative')
VERDICTS = ('works', 'does not', 'not enough data')


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


def verdict(metrics: dict) -> str:
  """One of `VERDICTS` from `metrics`' run-level recall and false-alarm rate (§10).

  An empty side (n = 0) has no interval: it cannot make a detector work, but the other
  side's interval alone can still show that it does not (the rule is an or).
  """
  caught, false = metrics['recall'], metrics['false_alarm_rate']
  if caught['n'] and false['n'] and caught['low'] > 0.5 and false['high'] < 0.5:
    return 'works'
  if (caught['n'] and caught['high'] < 0.5) or (false['n'] and false['low'] > 0.5):
    return 'does not'
  return 'not enough data'


def evaluate(outcomes: list[RunOutcome], horizon: int) -> dict:
  """Every metric of one detector under one gold definition, and its verdict."""
  out = {'recall': recall(outcomes), 'false_alarm_rate': false_alarm_rate(outcomes),
         'precision': precision(outcomes, horizon), 'lead_time': lead_times(outcomes)}
  return out | {'verdict': verdict(out), 'runs': [dataclasses.asdict(o) for o in outcomes]}


# Markdown, shared by experiments/detectors/evaluate.py and readme_section.py.

def cell(p: dict) -> str:
  """A proportion as 'k/n = rate [low, high]' ('k/0' when there is nothing to count)."""
  if p['rate'] is None:
    return f'{p["k"]}/0'
  return f'{p["k"]}/{p["n"]} = {p["rate"]:.2f} [{p["low"]:.2f}, {p["high"]:.2f}]'


def lead_cell(lead: dict) -> str:
  if lead['median'] is None:
    return 'n/a'
  return f'median {lead["median"]:+.1f} ({", ".join(f"{x:+d}" for x in lead["rounds"])})'


def table(by_detector: dict) -> list[str]:
  """Markdown rows: detector | recall | false-alarm rate | precision | lead time | verdict."""
  lines = ['| detector | recall | false-alarm rate | precision | lead time (rounds) | verdict |',
           '|---|---|---|---|---|---|']
  for name, m in by_detector.items():
    lines.append(f'| {name} | {cell(m["recall"])} | {cell(m["false_alarm_rate"])} | '
                 f'{cell(m["precision"])} ({m["precision"]["censored"]} censored) | '
                 f'{lead_cell(m["lead_time"])} | {m["verdict"]} |')
  return lines
