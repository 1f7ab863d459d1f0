"""Tests for SELECT: the threshold filter and the filter interface."""

from collections.abc import Sequence
import dataclasses
import math

import numpy as np
import pytest

from inversion_jax import selection
from inversion_jax.errors import UserError


def _candidates(scores, groups=None):
  groups = groups or list(range(len(scores)))
  return [selection.Candidate(group=g, tool='nmap', task=f'task {g}', command=f'nmap {i}',
                              reconstruction='scan', score=s)
          for i, (g, s) in enumerate(zip(groups, scores))]


def test_threshold_keeps_scores_at_or_above_threshold():
  mask = selection.ThresholdFilter().select(_candidates([0.2, 0.5, 0.49999, 0.9, math.nan]))
  assert mask.dtype == bool
  assert mask.tolist() == [False, True, False, True, False]


def test_threshold_on_no_candidates_is_an_empty_mask():
  mask = selection.ThresholdFilter(0.7).select([])
  assert mask.shape == (0,) and mask.dtype == bool


@pytest.mark.parametrize('threshold', [-0.1, 1.5, math.nan])
def test_threshold_outside_unit_interval_is_a_user_error(threshold):
  with pytest.raises(UserError, match='threshold'):
    selection.ThresholdFilter(threshold)


def test_get_filter_builds_by_name():
  chosen = selection.get_filter('threshold', threshold=0.7)
  assert chosen == selection.ThresholdFilter(0.7)
  assert selection.get_filter('threshold') == selection.ThresholdFilter(0.5)


def test_get_filter_errors_are_user_errors():
  with pytest.raises(UserError, match='threshold'):
    selection.get_filter('best')
  with pytest.raises(UserError, match='bad arguments'):
    selection.get_filter('threshold', m=2)


def test_kept_returns_candidates_in_order():
  candidates = _candidates([0.9, 0.1, 0.6])
  chosen = selection.kept(candidates, selection.ThresholdFilter().select(candidates))
  assert [c.command for c in chosen] == ['nmap 0', 'nmap 2']
  with pytest.raises(ValueError, match='mask shape'):
    selection.kept(candidates, np.ones(2, bool))


@dataclasses.dataclass(frozen=True)
class _BestOfGroup:
  """A group-aware toy filter: the shape a reproducibility filter will have."""

  def select(self, candidates: Sequence[selection.Candidate]) -> np.ndarray:
    best = {}
    for i, c in enumerate(candidates):
      if c.group not in best or c.score > candidates[best[c.group]].score:
        best[c.group] = i
    mask = np.zeros(len(candidates), bool)
    mask[list(best.values())] = True
    return mask


def test_group_aware_filters_fit_the_same_interface():
  candidates = _candidates([0.3, 0.8, 0.6, 0.1], groups=[0, 0, 1, 1])
  chosen: selection.Filter = _BestOfGroup()
  assert [c.score for c in selection.kept(candidates, chosen.select(candidates))] == [0.8, 0.6]
