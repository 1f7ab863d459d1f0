"""A round's numbers as flat `phase/metric` values, and the one list of what to show.

Every phase of a round (BEFORE, train, AFTER, held-out; the base model's held-out
evaluation rides in round 1 as `base`) returns a flat dict; `flatten` prefixes it with
the phase name. The console table, the summary, the report and its plot iterate over
`ROUND_ROWS` / `HELDOUT_ROWS` / `INDICATOR_ROWS` instead of naming keys themselves, so a
new phase or metric is data here, not edits in four files.
"""

import dataclasses
import math


HELDOUT_PHASE = 'heldout'
BASE_PHASE = 'base'  # The base model's held-out evaluation, stored with round 1.


@dataclasses.dataclass(frozen=True)
class Metric:
  key: str  # Without the phase prefix.
  label: str
  spec: str  # format() spec of a value; deltas use '+' + spec.
  relative: bool = True  # Changes shown relative to the start (False: a signed score).


ROUND_ROWS = (
    Metric('mean_score', 'mean score', '.3f'),
    Metric('acceptance_rate', 'acceptance', '.1%'),
    Metric('quality', 'quality', '.3f'),
    Metric('strict', 'strict pass', '.1%'),
)
HELDOUT_ROWS = (
    Metric('quality', 'real quality (graded)', '.3f'),
    Metric('strict', 'real quality (strict)', '.1%'),
    Metric('nlc2cmd', 'NLC2CMD score', '.3f', relative=False),  # Reference-based, [-1, 1].
)
INDICATOR_ROWS = (
    Metric('indicator/mean_option_count', 'options/cmd', '.2f'),
    Metric('indicator/unknown_option_rate', 'unknown opt', '.1%'),
    Metric('indicator/repeated_option_rate', 'repeated opt', '.1%'),
    Metric('indicator/echo_rate', 'task echo', '.1%'),
    Metric('indicator/prose_rate', 'prose', '.1%'),
    Metric('indicator/distinct_ratio', 'distinct', '.1%'),
    Metric('indicator/mean_tokens', 'tokens/cmd', '.1f'),
)


def flatten(phase: str, values: dict) -> dict:
  """{'mean_score': x} -> {'before/mean_score': x}, skipping non-numbers."""
  return {f'{phase}/{key}': float(value) for key, value in values.items()
          if isinstance(value, (int, float))}


def get(record: dict, phase: str, key: str):
  """record['metrics']['phase/key'], or None when absent or not finite."""
  value = (record.get('metrics') or {}).get(f'{phase}/{key}')
  if value is None or isinstance(value, float) and not math.isfinite(value):
    return None
  return float(value)


def fmt(value, spec: str) -> str:
  return 'n/a' if value is None else format(value, spec)


def after_value(rounds: list[dict], index: int, key: str) -> tuple[float | None, str | None]:
  """(value, source) of `key` for the adapters trained in `rounds[index]`.

  Source 'after': the round's own AFTER. 'next_before': a round without AFTER
  (`--after_every`) reads the next round's BEFORE, which samples the same adapters on other
  tasks (unless a Goodhart rollback made the next round start elsewhere: then None).
  (None, None) when neither exists: shown as n/a, never as a zero.
  """
  record = rounds[index]
  value = get(record, 'after', key)
  if value is not None:
    return value, 'after'
  if index + 1 < len(rounds) and (record.get('goodhart') or {}).get('rollback_to') is None:
    value = get(rounds[index + 1], 'before', key)
    if value is not None:
      return value, 'next_before'
  return None, None


def heldout_series(rounds: list[dict], key: str) -> list[tuple[int, float]]:
  """[(round, value)] of a held-out metric: round 0 is the base model."""
  out = []
  for record in rounds:
    if record.get('cycle') == 1 and get(record, BASE_PHASE, key) is not None:
      out.append((0, get(record, BASE_PHASE, key)))
    value = get(record, HELDOUT_PHASE, key)
    if value is not None:
      out.append((int(record['cycle']), value))
  return out


def relative_change(start, end):
  """(end - start) / |start|, or None when undefined."""
  if start is None or end is None or start == 0:
    return None
  return (end - start) / abs(start)


def goodhart_gap(rounds: list[dict]):
  """Relative change of the intrinsic score minus that of graded real quality.

  Intrinsic: round 1's BEFORE (the base model) -> the last round's AFTER. Real quality:
  the base model's held-out quality -> the last evaluated round's. Positive = the score
  rose more (or fell less) than real quality: the loop is being gamed.
  """
  if not rounds:
    return None
  score = relative_change(get(rounds[0], 'before', 'mean_score'),
                          after_value(rounds, len(rounds) - 1, 'mean_score')[0])
  series = heldout_series(rounds, 'quality')
  if score is None or len(series) < 2 or series[0][0] != 0:
    return None
  quality = relative_change(series[0][1], series[-1][1])
  return None if quality is None else score - quality
