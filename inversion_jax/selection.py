"""SELECT: which scored candidates become training data.

A filter maps a round's candidates to a boolean keep-mask, so filters that look at one
candidate (`ThresholdFilter`, the original V1) and filters that compare the candidates of
one task with each other (the V2 reproducibility filter: keep a passing candidate only if
at least m-1 other passing candidates of the same task are similar to it) share one
interface. Candidates of the same task share `group`.
"""

from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Protocol

import numpy as np

from inversion_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One generated command with its reconstruction and intrinsic score.

  Attributes:
    group: id of the task within the round; all candidates for one task share it.
    tool: the tool the task names.
    task: the task text.
    command: the cleaned generated command.
    reconstruction: the cleaned reconstructed task.
    score: the intrinsic score in [0, 1].
  """

  group: int
  tool: str
  task: str
  command: str
  reconstruction: str
  score: float


class Filter(Protocol):
  """Decides which candidates of a round to keep for training."""

  def select(self, candidates: Sequence[Candidate]) -> np.ndarray:
    """Returns a bool array, one entry per candidate, True = keep."""
    ...


@dataclasses.dataclass(frozen=True)
class ThresholdFilter:
  """The original's filter (V1): keep a candidate whose score is >= threshold."""

  threshold: float = 0.5

  def __post_init__(self):
    if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
      raise UserError(f'threshold must be in [0, 1], got {self.threshold}')

  def select(self, candidates: Sequence[Candidate]) -> np.ndarray:
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    return scores >= self.threshold  # NaN scores compare False: never kept.


FILTERS: dict[str, Callable[..., Filter]] = {
    'threshold': ThresholdFilter,
}


def get_filter(name: str, **kwargs) -> Filter:
  """Builds a filter by name; unknown names and bad arguments are user mistakes."""
  if name not in FILTERS:
    raise UserError(f'unknown filter {name!r}; choose one of {", ".join(sorted(FILTERS))}')
  try:
    return FILTERS[name](**kwargs)
  except TypeError as error:
    raise UserError(f'bad arguments for filter {name!r}: {error}') from None


def kept(candidates: Sequence[Candidate], mask: np.ndarray) -> list[Candidate]:
  """The candidates where `mask` is True, in their original order."""
  mask = np.asarray(mask, dtype=bool)
  if mask.shape != (len(candidates),):
    raise ValueError(f'mask shape {mask.shape} does not match {len(candidates)} candidates')
  return [c for c, keep in zip(candidates, mask) if keep]
