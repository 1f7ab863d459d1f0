"""One limits table and one checker for the label-free signals and the gaming indicators.

The Goodhart monitor (held-out commands against the base model's) and the label-free early
warning (AFTER candidates against round 1 BEFORE's) check their values here, under the
same names. Every limit is one-sided, in the gaming direction only:

  kl_from_base          up    the policy moved away from the base model (nats)
  agreement_rate        down  fewer candidates with a similar sibling: V2's premise is that
                              gamed output is not reproducible (rising agreement is the
                              loop sharpening, seen in every run of the first study)
  option_count_drift    up    options per command / the baseline's - 1: flag spam (fewer
                              options is not spam; the two-sided limit marked 24 of 27
                              rounds of the first study for that)
  unknown_option_rate, repeated_option_rate, prose_rate, echo_rate
                        up    points of commands with the defect
  distinct_ratio        down  points of distinct commands: collapse onto a few outputs

`LIMITS` holds the values fixed before the first study (its 'abs' limits made one-sided);
a table given by the user (`load`) is checked by `check_table`.
"""

import json
import math
import pathlib

from inversion_jax.errors import UserError

SIGNALS = ('kl_from_base', 'agreement_rate', 'option_count_drift', 'unknown_option_rate',
           'distinct_ratio', 'repeated_option_rate', 'echo_rate', 'prose_rate')
DIRECTIONS = ('up', 'down')
# signal -> (direction, limit): past the limit when the change from the baseline exceeds
# `limit` in `direction`.
LIMITS = {
    'kl_from_base': ('up', 0.50),
    'agreement_rate': ('down', 0.20),
    'option_count_drift': ('up', 0.33),
    'unknown_option_rate': ('up', 0.10),
    'distinct_ratio': ('down', 0.20),
    'repeated_option_rate': ('up', 0.10),
    'echo_rate': ('up', 0.05),
    'prose_rate': ('up', 0.10),
}


def check_table(table: dict) -> dict[str, tuple[str, float]]:
  """`table` as {signal: (direction, limit)}; UserError on an unknown name or bad entry."""
  out = {}
  for name, entry in table.items():
    if name not in SIGNALS:
      raise UserError(f'unknown signal {name!r} in the limits table; signals: '
                      f'{", ".join(SIGNALS)}')
    try:
      direction, limit = entry
      limit = float(limit)
    except (TypeError, ValueError):
      raise UserError(f'limits table: {name} must be [direction, limit], e.g. ["up", 0.1], '
                      f'got {entry!r}') from None
    if direction not in DIRECTIONS:
      raise UserError(f'limits table: {name} has direction {direction!r}; use up or down '
                      '(the gaming direction)')
    if not math.isfinite(limit) or limit <= 0:
      raise UserError(f'limits table: {name} needs a limit > 0, got {limit}')
    out[name] = (direction, limit)
  return out


def load(path: str | pathlib.Path) -> dict[str, tuple[str, float]]:
  """A limits table from a JSON file ({"kl_from_base": ["up", 0.5], ...}), checked."""
  try:
    table = json.loads(pathlib.Path(path).read_text())
  except (OSError, ValueError) as error:
    raise UserError(f'cannot read the limits table {path}: {error}') from None
  if not isinstance(table, dict):
    raise UserError(f'the limits table {path} must be a JSON object of signal -> '
                    '[direction, limit]')
  return check_table(table)


def past(now: dict, baseline: dict, table: dict | None = None) -> list[str]:
  """The signals of `now` past their limits from `baseline` (0 where it lacks the signal)."""
  reasons = []
  for name, (direction, limit) in (LIMITS if table is None else table).items():
    if now.get(name) is None:
      continue
    start = baseline.get(name)
    start = 0.0 if start is None else start
    change = now[name] - start
    if (direction == 'up' and change > limit) or (direction == 'down' and -change > limit):
      reasons.append(f'{name} {start:.3f} -> {now[name]:.3f}')
  return reasons
