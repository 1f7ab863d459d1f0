"""Tests for SELECT: the threshold filter and the filter interface."""

import math

import numpy as np
import pytest

from inversion_jax.errors import UserError
from inversion_jax.loop import selection


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


def test_every_filter_gives_one_keep_flag_per_candidate():
  candidates = _embedded([0, 0, 1, 1], [0.9, 0.1, 0.6, 0.7],
                         [[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
  for name in selection.FILTERS:
    settings = dict(threshold=0.5) | (dict(seed=0) if name == 'random_matched' else {})
    mask = np.asarray(selection.get_filter(name, **settings).select(candidates))
    assert mask.dtype == bool and mask.shape == (len(candidates),), name


def _embedded(groups, scores, vectors, commands=None):
  commands = commands or [f'nmap -sV host{i}' for i in range(len(scores))]
  return [selection.Candidate(group=g, tool='nmap', task=f'task {g}', command=c,
                              reconstruction='r', score=s, embedding=np.asarray(v, float))
          for g, s, v, c in zip(groups, scores, vectors, commands)]


def test_similarity_on_hand_made_embeddings_and_option_sets():
  sims = selection.similarity_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]),
                                     [frozenset({'-sV'}), frozenset({'-sV', '-p'}), frozenset()],
                                     (0.6, 0.4))
  # cos 1 -> 1.0 (x0.6) + Jaccard 1/2 (x0.4); cos -1 -> 0 + Jaccard 0.
  np.testing.assert_allclose(sims[0, 1], 0.6 + 0.2)
  np.testing.assert_allclose(sims[0, 2], 0.0)
  np.testing.assert_allclose(sims[2, 2], 0.6 * 1.0 + 0.4 * 1.0)  # No options on both: 1.
  assert selection.option_words('nmap -sV --top-ports=10 "-p 22" host') == {
      '-sV', '--top-ports', '-p 22'}
  assert selection.option_words('nmap "unbalanced') == frozenset()


def test_reproducibility_filter_on_hand_made_groups():
  same, other = [1.0, 0.0], [-1.0, 0.0]
  # Group 0: two similar passing candidates and a third that fails the threshold.
  # Group 1: one passing candidate alone (its sibling fails the threshold).
  # Group 2: two passing but dissimilar candidates (opposite embeddings, other options).
  candidates = _embedded(
      [0, 0, 0, 1, 1, 2, 2], [0.6, 0.7, 0.1, 0.9, 0.2, 0.8, 0.8],
      [same, same, same, same, same, same, other],
      ['nmap -sV a', 'nmap -sV b', 'nmap -sV c', 'nmap -sV d', 'nmap -sV e', 'nmap -sV f',
       'nmap -O -p 1 g'])
  v2 = selection.ReproducibilityFilter(threshold=0.5, m=2, similarity=0.6)
  assert v2.select(candidates).tolist() == [True, True, False, False, False, False, False]
  assert v2.agreement(candidates).tolist() == [1, 1, 2, 0, 1, 0, 0]
  assert v2.stats(candidates) == {'passed_threshold': 5, 'removed_by_reproducibility': 3}
  v1 = selection.ThresholdFilter(0.5).select(candidates)
  m1 = selection.ReproducibilityFilter(threshold=0.5, m=1).select(candidates)
  assert m1.tolist() == v1.tolist()  # m = 1 is V1.
  # Groups never mix: the same command in another task does not count.
  lone = _embedded([5, 6], [0.9, 0.9], [same, same], ['nmap -sV x', 'nmap -sV x'])
  assert v2.select(lone).tolist() == [False, False]
  assert selection.ReproducibilityFilter.needs == {'embeddings'}


@pytest.mark.parametrize('kwargs,message', [
    (dict(m=0), 'repro_m'), (dict(similarity=1.5), 'repro_similarity'),
    (dict(weights=(0.5, 0.6)), 'repro_weights'), (dict(threshold=2.0), 'threshold')])
def test_reproducibility_settings_are_checked(kwargs, message):
  with pytest.raises(UserError, match=message):
    selection.get_filter('reproducibility', **kwargs)


# --- The calibrated threshold (--target_acceptance) on scripted scores. ---


@pytest.mark.parametrize('scores, target, threshold, kept', [
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.6, 0.5, 0.6),
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.607, 0.5, 0.6),
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.66, 0.4, 0.7),  # 0.7 is nearer.
    # Ties never split: 0.3 x 4 are kept or dropped together (fractions 0.2, 0.6, 1.0).
    ([0.9, 0.8, 0.3, 0.3, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1], 0.45, 0.3, 0.6),
    ([0.9, 0.8, 0.3, 0.3, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1], 0.35, 0.8, 0.2),
    # Equally near two steps (0.4 and 0.6 for 0.5): the stricter threshold.
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.5, 0.6, 0.5),
    ([0.2, 0.2, 0.6, 0.6], 0.5, 0.6, 0.5),
    ([0.2, 0.2, 0.6, 0.6, 0.6], 0.5, 0.6, 0.6),
    # NaN scores are candidates never kept; order does not matter.
    ([math.nan, 0.7, math.nan, 0.1], 0.5, 0.1, 0.5),
    ([math.nan, 0.7, math.nan, 0.1], 0.3, 0.7, 0.25),
    ([0.3, 0.3, 0.3], 0.1, 0.3, 1.0),  # One distinct score: everything.
])
def test_calibrated_threshold_on_scripted_scores(scores, target, threshold, kept):
  got, fraction = selection.calibrate_threshold(scores, target)
  assert got == pytest.approx(threshold) and fraction == pytest.approx(kept)
  # The threshold filter then keeps exactly that fraction of the same scores.
  mask = selection.ThresholdFilter(got).select(_candidates(scores))
  assert mask.mean() == pytest.approx(kept)


def test_calibrated_threshold_is_deterministic_and_order_free():
  scores = np.random.default_rng(0).random(150)
  first = selection.calibrate_threshold(scores, 0.607)
  assert selection.calibrate_threshold(scores[::-1].copy(), 0.607) == first
  assert first[1] == pytest.approx(91 / 150)  # round(0.607 * 150) = 91 distinct scores kept.


@pytest.mark.parametrize('target', [0.0, 1.0, -0.2, 1.5, math.nan, math.inf])
def test_target_acceptance_outside_zero_one_is_one_clear_error(target):
  with pytest.raises(UserError, match=r'--target_acceptance must be a fraction in \(0, 1\)'):
    selection.calibrate_threshold([0.1, 0.5], target)


def test_calibration_without_finite_scores_is_a_user_error():
  with pytest.raises(UserError, match='no finite score'):
    selection.calibrate_threshold([math.nan, math.nan], 0.5)


# --- random_matched: the random-selection control. ---

SCORES = np.random.default_rng(1).random(150).tolist()


@pytest.mark.parametrize('threshold', [0.0, 0.3, 0.61, 0.95, 1.0])
def test_random_matched_keeps_as_many_as_the_threshold(threshold):
  candidates = _candidates(SCORES)
  count = selection.ThresholdFilter(threshold).select(candidates).sum()
  for seed in range(5):
    mask = selection.RandomMatchedFilter(threshold, seed=seed).select(candidates)
    assert mask.dtype == bool and mask.shape == (150,) and mask.sum() == count


def test_random_matched_is_reproducible_for_a_seed_and_differs_across_seeds():
  candidates = _candidates(SCORES)
  masks = [selection.RandomMatchedFilter(0.4, seed=s).select(candidates) for s in (7, 7, 8)]
  assert masks[0].tolist() == masks[1].tolist()
  assert masks[0].tolist() != masks[2].tolist()
  # Drawn from all candidates, not from the passing ones: some kept rows fail the threshold.
  passing = selection.ThresholdFilter(0.4).select(candidates)
  assert (masks[0] & ~passing).any()
  stats = selection.RandomMatchedFilter(0.4, seed=7).stats(candidates)
  assert stats == {'passed_threshold': int(passing.sum()),
                   'kept_also_passing': int((masks[0] & passing).sum())}


def test_random_matched_draws_uniformly():
  """Over many seeds each candidate is kept about count / n of the time."""
  candidates = _candidates([0.9, 0.1, 0.1, 0.1, 0.9, 0.1])  # The threshold keeps 2 of 6.
  frequency = np.mean([selection.RandomMatchedFilter(0.5, seed=s).select(candidates)
                       for s in range(3000)], axis=0)
  np.testing.assert_allclose(frequency, 1 / 3, atol=0.04)


def test_random_matched_without_a_threshold_is_one_clear_error():
  with pytest.raises(UserError, match='give --threshold or --target_acceptance'):
    selection.get_filter('random_matched')


def test_with_seed_and_with_threshold():
  matched = selection.get_filter('random_matched', threshold=0.5, seed=0)
  assert selection.with_seed(matched, 9) == selection.RandomMatchedFilter(0.5, seed=9)
  assert selection.with_seed(selection.ThresholdFilter(0.5), 9) == selection.ThresholdFilter(0.5)
  assert selection.with_threshold(matched, 0.2).threshold == 0.2
  repro = selection.with_threshold(selection.ReproducibilityFilter(0.5, m=3), 0.25)
  assert (repro.threshold, repro.m) == (0.25, 3)
