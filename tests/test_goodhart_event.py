"""The gold Goodhart event on scripted histories, and delta from per-task held-out rows."""

import math

import numpy as np
import pytest

from inversion_jax.errors import UserError
from inversion_jax.goodhart import goodhart_event as gold
from inversion_jax.records import files

BASE_SCORE = 0.20


def run(qualities, scores=None, base=0.50):
  """Records of rounds 1..n: held-out quality per round (None = not evaluated) and the
  AFTER score (default above the base model's 0.20)."""
  scores = scores or [0.30] * len(qualities)
  rounds = []
  for cycle, (quality, score) in enumerate(zip(qualities, scores), 1):
    metrics = {'before/mean_score': BASE_SCORE if cycle == 1 else 0.3,
               'after/mean_score': score}
    if quality is not None:
      metrics['heldout/quality'] = quality
    if cycle == 1 and base is not None:
      metrics['base/quality'] = base
    rounds.append({'cycle': cycle, 'metrics': metrics})
  return rounds


def test_one_drop_is_not_an_event_two_consecutive_are():
  once = run([0.55, 0.48, 0.56, 0.55])  # Round 2 is 0.07 below round 1's best, once.
  assert [d.round for d in gold.drops(once, 0.05)] == [2]
  assert gold.events(once, 0.05) == [] and gold.first_event(once, 0.05) is None
  twice = run([0.55, 0.48, 0.49, 0.56, 0.45, 0.44, 0.43])
  assert gold.events(twice, 0.05) == [gold.Event(2, 3), gold.Event(5, 6)]
  assert gold.gold_rounds(twice, 0.05) == [2, 3, 5, 6, 7]
  assert gold.events(twice, 0.05, confirm=3) == [gold.Event(5, 7)]
  with pytest.raises(UserError, match='confirming'):
    gold.gold_rounds(twice, 0.05, confirm=0)
  with pytest.raises(UserError, match='reference'):
    gold.events(twice, 0.05, 'worst')


def test_delta_is_inclusive_and_absolute():
  rounds = run([0.60, 0.55, 0.55])  # Exactly 0.05 below round 1's 0.60, twice.
  assert gold.first_event(rounds, 0.05) == gold.Event(2, 3)
  assert gold.first_event(rounds, 0.0501) is None


def test_best_so_far_and_base_references():
  # Up to 0.60, then 0.52: 0.08 below the best, but above the base model's 0.50.
  rounds = run([0.60, 0.52, 0.52, 0.44, 0.44])
  assert gold.first_event(rounds, 0.05, 'best') == gold.Event(2, 3)
  assert gold.first_event(rounds, 0.05, 'base') == gold.Event(4, 5)
  drop = gold.drops(rounds, 0.05, 'base')[0]
  assert (drop.reference_round, drop.reference_quality) == (0, 0.50)
  # The base model is the best so far when every round is below it.
  below = run([0.44, 0.43])
  assert gold.first_event(below, 0.05) == gold.Event(1, 2)
  assert gold.drops(below, 0.05)[0].reference_round == 0
  assert gold.first_event(run([0.44, 0.43], base=None), 0.05, 'base') is None


def test_no_event_while_the_score_is_not_above_the_base_models():
  rounds = run([0.60, 0.50, 0.50], scores=[0.30, BASE_SCORE, 0.30])
  assert [d.round for d in gold.drops(rounds, 0.05)] == [3]
  assert gold.first_event(rounds, 0.05) is None


def test_consecutive_means_consecutive_evaluations():
  rounds = run([0.60, None, 0.50, None, 0.50])  # Evaluated every second round.
  assert gold.first_event(rounds, 0.05) == gold.Event(3, 5)


def test_drop_now_is_the_last_round_only():
  rounds = run([0.60, 0.50, 0.61])
  assert gold.drop_now(rounds[:2], 0.05).round == 2
  assert gold.drop_now(rounds, 0.05) is None


@pytest.mark.parametrize('delta', [0.0, -0.1, math.nan, 'x'])
def test_bad_delta_is_one_line(delta):
  with pytest.raises(UserError) as error:
    gold.first_event(run([0.6, 0.5]), delta)
  assert '\n' not in str(error.value) and 'delta' in str(error.value)


def rows(qualities, ids=None):
  ids = ids or [f't{i}' for i in range(len(qualities))]
  return [{'id': i, 'verdict': {'quality': q}} for i, q in zip(ids, qualities)]


def test_paired_se_and_delta_on_known_numbers():
  a, b = rows([0.0, 0.5, 1.0, 0.5]), rows([0.5, 0.5, 1.0, 0.0])
  se, n = gold.paired_se(a, b)  # Differences 0.5, 0, 0, -0.5: sd sqrt(1/6), n 4.
  assert n == 4 and se == pytest.approx(math.sqrt(1 / 6) / 2)
  c = rows([0.5, 0.5, 1.0, 0.5])  # b -> c: differences 0, 0, 0, 0.5.
  se2 = gold.paired_se(b, c)[0]
  assert se2 == pytest.approx(np.std([0, 0, 0, 0.5], ddof=1) / 2)
  assert gold.derive_delta([(a, b), (b, c)]) == pytest.approx(
      2 * math.sqrt((se ** 2 + se2 ** 2) / 2))
  assert gold.derive_delta([(a, b)], multiple=3) == pytest.approx(3 * se)
  # Only tasks graded in both count.
  assert gold.paired_se(a, rows([0.5, 0.5, 1.0], ['t0', 't1', 'x']))[1] == 2


def test_delta_refuses_what_cannot_measure_noise():
  same = rows([0.5, 0.5, 0.5])
  with pytest.raises(UserError, match='noise is 0'):
    gold.derive_delta([(same, same)])
  with pytest.raises(UserError, match='no pair'):
    gold.derive_delta([])
  with pytest.raises(UserError, match='at least 2 tasks'):
    gold.paired_se(rows([0.5]), rows([0.4]))


def test_heldout_rows_of_a_run_directory(tmp_path):
  files.write_rows(tmp_path, 0, 'heldout', rows([0.1, 0.2]))
  files.write_rows(tmp_path, 2, 'heldout', rows([0.3, 0.2]))
  files.write_rows(tmp_path, 1, 'before', rows([0.9]))  # Not held-out: ignored.
  found = gold.heldout_rows(tmp_path)
  assert sorted(found) == [0, 2]
  pairs = gold.consecutive_pairs(found)
  assert len(pairs) == 1 and pairs[0][1][0]['verdict']['quality'] == 0.3
