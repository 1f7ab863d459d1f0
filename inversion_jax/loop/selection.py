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
import shlex
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
  embedding: np.ndarray | None = None  # Only for filters that need embeddings.


class Filter(Protocol):
  """Decides which candidates of a round to keep for training.

  `needs` names what the round must compute for it beyond the intrinsic score
  ('embeddings': the model's mean-pooled hidden states of each command, at `layer`).
  """

  needs: frozenset

  def select(self, candidates: Sequence[Candidate]) -> np.ndarray:
    """Returns a bool array, one entry per candidate, True = keep."""
    ...

  def stats(self, candidates: Sequence[Candidate]) -> dict:
    """Counts worth recording per phase (how many passed, how many a test removed)."""
    ...


@dataclasses.dataclass(frozen=True)
class ThresholdFilter:
  """The original's filter (V1): keep a candidate whose score is >= threshold."""

  threshold: float = 0.5

  def __post_init__(self):
    if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
      raise UserError(f'threshold must be in [0, 1], got {self.threshold}')

  needs = frozenset()

  def select(self, candidates: Sequence[Candidate]) -> np.ndarray:
    scores = np.array([c.score for c in candidates], dtype=np.float64)
    return scores >= self.threshold  # NaN scores compare False: never kept.

  def stats(self, candidates: Sequence[Candidate]) -> dict:
    return {'passed_threshold': int(self.select(candidates).sum())}


def option_words(command: str) -> frozenset[str]:
  """The options a command uses, as `shlex` splits it: words starting with '-' (`--a=b` -> `--a`)."""
  try:
    words = shlex.split(command)
  except ValueError:
    words = command.split()
  return frozenset(w.split('=', 1)[0] for w in words if len(w) > 1 and w.startswith('-'))


def jaccard(a: frozenset, b: frozenset) -> float:
  """|a & b| / |a | b|; two commands without options use the same (no) options: 1."""
  return 1.0 if not a and not b else len(a & b) / len(a | b)


def similarity_matrix(embeddings: np.ndarray, option_sets: Sequence[frozenset],
                      weights: tuple[float, float]) -> np.ndarray:
  """w_emb * (cos + 1) / 2 + w_opt * Jaccard of option sets, for every pair: [N, N]."""
  embeddings = np.asarray(embeddings, np.float64)
  norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
  unit = embeddings / np.maximum(norms, 1e-12)
  cosine = np.clip(unit @ unit.T, -1.0, 1.0)
  overlap = np.array([[jaccard(a, b) for b in option_sets] for a in option_sets], np.float64)
  return weights[0] * (cosine + 1.0) / 2.0 + weights[1] * overlap


@dataclasses.dataclass(frozen=True)
class ReproducibilityFilter:
  """V2: keep a candidate that passes the threshold AND has at least m-1 other passing
  candidates of the same task similar to it (similarity >= `similarity`).

  Similarity = w_emb * (cos + 1) / 2 of the model's own mean-pooled hidden states of the two
  commands + w_opt * Jaccard of the option words they use: intrinsic signals only (no
  validator, no spec, no reference). With (cos + 1) / 2 the embedding term is never below
  w_emb / 2 (0.3 by default): the original's V2 had the same floor.
  """

  threshold: float = 0.5
  m: int = 2
  similarity: float = 0.6
  weights: tuple[float, float] = (0.6, 0.4)
  layer: int | None = None  # Hidden layer of the embeddings; None = the model's last.

  needs = frozenset({'embeddings'})

  def __post_init__(self):
    ThresholdFilter(self.threshold)
    if not isinstance(self.m, int) or self.m < 1:
      raise UserError(f'--repro_m must be an integer >= 1, got {self.m}')
    if not (math.isfinite(self.similarity) and 0.0 <= self.similarity <= 1.0):
      raise UserError(f'--repro_similarity must be in [0, 1], got {self.similarity}')
    if len(self.weights) != 2 or min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-6:
      raise UserError(f'--repro_weights must be two non-negative numbers summing to 1 '
                      f'(embedding, options), got {",".join(map(str, self.weights))}')

  def agreement(self, candidates: Sequence[Candidate]) -> np.ndarray:
    """Per candidate, how many other passing candidates of its task are similar to it."""
    passing = ThresholdFilter(self.threshold).select(candidates)
    counts = np.zeros((len(candidates),), np.int64)
    for group in sorted({c.group for c in candidates}):
      members = [i for i, c in enumerate(candidates) if c.group == group]
      counts[members] = group_agreement([candidates[i] for i in members], passing[members],
                                        self.similarity, self.weights)
    return counts

  def select(self, candidates: Sequence[Candidate]) -> np.ndarray:
    passing = ThresholdFilter(self.threshold).select(candidates)
    if self.m == 1:
      return passing
    return passing & (self.agreement(candidates) >= self.m - 1)

  def stats(self, candidates: Sequence[Candidate]) -> dict:
    passing = ThresholdFilter(self.threshold).select(candidates)
    kept = self.select(candidates)
    return {'passed_threshold': int(passing.sum()),
            'removed_by_reproducibility': int((passing & ~kept).sum())}


def group_agreement(members: Sequence[Candidate], passing: np.ndarray, similarity: float,
                    weights: tuple[float, float]) -> np.ndarray:
  """For each member of one task's group: similar passing siblings (itself excluded)."""
  if any(c.embedding is None for c in members):
    raise ValueError('the reproducibility filter needs each candidate\'s embedding')
  sims = similarity_matrix(np.stack([c.embedding for c in members]),
                           [option_words(c.command) for c in members], weights)
  similar = (sims >= similarity) & passing[None, :] & ~np.eye(len(members), dtype=bool)
  return similar.sum(-1)


@dataclasses.dataclass(frozen=True)
class RandomMatchedFilter:
  """The random-selection control: keep exactly as many candidates as `ThresholdFilter`
  with `threshold` would keep, drawn uniformly at random from all candidates.

  It separates the effect of selecting by the intrinsic score from that of self-training on
  as many of the model's own samples. `seed` makes the draw reproducible; the loop sets it
  per round and phase from the run's seed (`with_seed`).
  """

  threshold: float | None = None
  seed: int = 0

  needs = frozenset()

  def __post_init__(self):
    if self.threshold is None:
      raise UserError('--filter=random_matched keeps as many candidates as a threshold would: '
                      'give --threshold or --target_acceptance')
    ThresholdFilter(self.threshold)

  def select(self, candidates: Sequence[Candidate]) -> np.ndarray:
    count = int(ThresholdFilter(self.threshold).select(candidates).sum())
    mask = np.zeros((len(candidates),), bool)
    mask[np.random.default_rng(self.seed).choice(len(candidates), count, replace=False)] = True
    return mask

  def stats(self, candidates: Sequence[Candidate]) -> dict:
    passing = ThresholdFilter(self.threshold).select(candidates)
    return {'passed_threshold': int(passing.sum()),
            'kept_also_passing': int((passing & self.select(candidates)).sum())}


def with_seed(filter_: Filter, seed: int) -> Filter:
  """`filter_` drawing with `seed` if it draws at random (has a `seed`), else unchanged."""
  if 'seed' in {f.name for f in dataclasses.fields(filter_)}:
    return dataclasses.replace(filter_, seed=seed)
  return filter_


def with_threshold(filter_: Filter, threshold: float) -> Filter:
  """`filter_` with its score threshold replaced (a calibrated one)."""
  return dataclasses.replace(filter_, threshold=threshold)


def check_target(target: float):
  """A target acceptance is a fraction of candidates to keep, strictly between 0 and 1."""
  if not (isinstance(target, (int, float)) and math.isfinite(target) and 0.0 < target < 1.0):
    raise UserError(f'--target_acceptance must be a fraction in (0, 1) (e.g. 0.607 keeps '
                    f'60.7% of round 1\'s candidates), got {target}')


def calibrate_threshold(scores, target: float) -> tuple[float, float]:
  """(threshold, kept fraction): the threshold keeping the fraction of `scores` nearest `target`.

  The threshold is one of the scores themselves and keeps `score >= threshold`, as
  `ThresholdFilter` does, so candidates with equal scores are kept or dropped together: the
  kept fraction steps over the distinct scores and the nearest step wins; between two steps
  equally near, the stricter (higher) threshold. NaN scores count as candidates never kept.
  Deterministic: the same scores give the same threshold.
  """
  check_target(target)
  scores = np.asarray(scores, np.float64).ravel()
  finite = np.sort(np.unique(scores[np.isfinite(scores)]))[::-1]  # Strictest first.
  if not len(finite):
    raise UserError('cannot calibrate the threshold: round 1 produced no finite score')
  fractions = np.array([np.sum(scores >= s) for s in finite]) / len(scores)
  best = int(np.argmin(np.abs(fractions - target)))  # argmin: the first (strictest) of ties.
  return float(np.clip(finite[best], 0.0, 1.0)), float(fractions[best])


FILTERS: dict[str, Callable[..., Filter]] = {
    'threshold': ThresholdFilter,
    'reproducibility': ReproducibilityFilter,
    'random_matched': RandomMatchedFilter,
}


def get_filter(name: str, **kwargs) -> Filter:
  """Builds a filter by name; unknown names and bad arguments are user mistakes."""
  if name not in FILTERS:
    raise UserError(f'unknown filter {name!r}; choose one of {", ".join(sorted(FILTERS))}')
  try:
    return FILTERS[name](**kwargs)
  except TypeError as error:
    raise UserError(f'bad arguments for filter {name!r}: {error}') from None


