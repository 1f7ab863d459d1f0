"""Goodhart detectors replayed on a finished run: the rounds at which each would alarm.

A detector maps a run's records (progress.json's rounds) to its alarm rounds, computed
from what the run stored, so a limits table can be changed and replayed without rerunning:

  monitor            the Goodhart monitor (`monitor.py`) replayed round by round: a
                     quality drop (the gold event's rule, unconfirmed) or a held-out
                     indicator past its limit
  monitor_drop       its quality rule alone (what a held-out evaluation shows first)
  early_warning      `early_warning.ALARM_AT` or more label-free signals past their limits
                     (`signal/*`, against round 1 BEFORE's values)
  signal:<name>      one label-free signal past its limit, alone

Every limit comes from one table (`limits.py`); `detector_metrics.py` scores the alarms
against the gold event.
"""

import dataclasses
import pathlib
from collections.abc import Callable

from inversion_jax.errors import UserError
from inversion_jax.goodhart import detector_metrics
from inversion_jax.goodhart import early_warning
from inversion_jax.goodhart import goodhart_event
from inversion_jax.goodhart import limits as limits_lib
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.goodhart import monitor as monitor_lib
from inversion_jax.records import report as report_lib


@dataclasses.dataclass(frozen=True)
class Detector:
  name: str
  alarms: Callable[[list[dict]], list[int]]  # Run records -> alarm rounds, ascending.


def signal_values(record: dict) -> dict:
  """A round's stored label-free signals (`signal/<name>`) under the table's names."""
  values = {name: metrics_lib.get(record, early_warning.PHASE, name)
            for name in limits_lib.SIGNALS}
  return {k: v for k, v in values.items() if v is not None}


def signal_alarms(rounds: list[dict], table: dict, alarm_at: int = 1) -> list[int]:
  """Rounds with >= `alarm_at` stored signals past their limits in `table`."""
  if not rounds:
    return []
  baseline = early_warning.baseline(rounds[0].get('metrics') or {})
  return [int(r['cycle']) for r in rounds
          if len(limits_lib.past(signal_values(r), baseline, table)) >= alarm_at]


def monitor_alarms(rounds: list[dict], delta: float, table: dict | None = None,
                   indicators: bool = True) -> list[int]:
  """Rounds at which the Goodhart monitor would alarm (with its indicators, or without)."""
  watch = monitor_lib.GoodhartMonitor('warn', delta, table)
  out = []
  for end in range(1, len(rounds) + 1):
    if indicators:
      alarm = watch.check(rounds[:end])
      fired = alarm is not None
    else:
      fired = goodhart_event.drop_now(rounds[:end], delta) is not None
    if fired:
      out.append(int(rounds[end - 1]['cycle']))
  return out


def detectors(delta: float, table: dict | None = None) -> list[Detector]:
  """The detectors evaluated, every limit from `table` (default `limits.LIMITS`)."""
  goodhart_event.check_delta(delta)
  table = limits_lib.check_table(limits_lib.LIMITS if table is None else table)
  out = [
      Detector('monitor', lambda rounds: monitor_alarms(rounds, delta, table)),
      Detector('monitor_drop', lambda rounds: monitor_alarms(rounds, delta, table, False)),
      Detector('early_warning', lambda rounds: signal_alarms(rounds, table,
                                                             early_warning.ALARM_AT)),
  ]
  for name in table:
    one = {name: table[name]}
    out.append(Detector(f'signal:{name}', lambda rounds, one=one: signal_alarms(rounds, one)))
  return out


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  label: str  # 'positive' or 'negative' (detector_metrics.LABELS).
  rounds: list[dict]


def load_runs(positive, negative) -> list[Run]:
  """Labelled runs from run directories (held-out evaluations made offline merged in)."""
  if not positive and not negative:
    raise UserError('give the runs: --positive=DIRS and/or --negative=DIRS')
  runs = []
  for label, dirs in (('positive', positive), ('negative', negative)):
    for run_dir in dirs:
      if not pathlib.Path(run_dir).is_dir():
        raise UserError(f'{run_dir} is not a run directory')
      runs.append(Run(str(run_dir), label, report_lib.load_rounds(run_dir)[1]))
  return runs


def outcome(run: Run, detector: Detector, delta: float,
            reference: str = 'best') -> detector_metrics.RunOutcome:
  """One run's alarms under `detector` beside its gold event under `reference`."""
  event = goodhart_event.first_event(run.rounds, delta, reference)
  return detector_metrics.RunOutcome(
      run.name, run.label, detector.alarms(run.rounds),
      goodhart_event.gold_rounds(run.rounds, delta, reference),
      None if event is None else event.onset,
      max((int(r['cycle']) for r in run.rounds), default=0))


def evaluate(runs: list[Run], delta: float, horizon: int, table: dict | None = None) -> dict:
  """reference -> detector -> `detector_metrics.evaluate`, for every gold definition."""
  if horizon < 0:
    raise UserError(f'the horizon must be >= 0 rounds, got {horizon}')
  for run in runs:
    if run.label not in detector_metrics.LABELS:
      raise UserError(f'{run.name}: label {run.label!r}; use positive or negative')
  found = detectors(delta, table)
  return {reference: {d.name: detector_metrics.evaluate(
      [outcome(run, d, delta, reference) for run in runs], horizon) for d in found}
          for reference in goodhart_event.REFERENCES}
