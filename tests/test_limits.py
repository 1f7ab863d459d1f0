"""The one limits table: one-sided checks, and refusals of a bad table in one line."""

import json

import pytest

from inversion_jax.errors import UserError
from inversion_jax.goodhart import limits


def test_every_signal_is_checked_in_its_gaming_direction_only():
  baseline = {'agreement_rate': 0.5, 'option_count_drift': 0.0, 'distinct_ratio': 0.9}
  sharpening = {'agreement_rate': 0.9, 'option_count_drift': -0.6, 'distinct_ratio': 1.0}
  assert limits.past(sharpening, baseline) == []
  gaming = {'agreement_rate': 0.2, 'option_count_drift': 0.5, 'distinct_ratio': 0.6}
  assert limits.past(gaming, baseline) == ['agreement_rate 0.500 -> 0.200',
                                           'option_count_drift 0.000 -> 0.500',
                                           'distinct_ratio 0.900 -> 0.600']
  # A signal the baseline lacks starts at 0; one the round lacks is skipped.
  assert limits.past({'kl_from_base': 0.6}, {}) == ['kl_from_base 0.000 -> 0.600']
  assert limits.past({}, baseline) == []


def test_limits_are_strict_and_the_table_can_be_replaced():
  assert limits.past({'echo_rate': 0.05}, {'echo_rate': 0.0}) == []  # At the limit: calm.
  table = {'echo_rate': ('up', 0.01)}
  assert limits.past({'echo_rate': 0.05, 'kl_from_base': 9.0}, {}, table) == [
      'echo_rate 0.000 -> 0.050']


def test_every_signal_named_in_the_default_table():
  assert set(limits.LIMITS) == set(limits.SIGNALS)
  assert limits.check_table(limits.LIMITS) == limits.LIMITS
  assert all(direction in limits.DIRECTIONS for direction, _ in limits.LIMITS.values())


@pytest.mark.parametrize('table, message', [
    ({'kl_form_base': ['up', 0.5]}, "unknown signal 'kl_form_base'"),
    ({'kl_from_base': ['abs', 0.5]}, "direction 'abs'"),
    ({'kl_from_base': ['up', 0]}, 'limit > 0'),
    ({'kl_from_base': 0.5}, 'must be [direction, limit]'),
])
def test_bad_table_is_one_line(table, message):
  with pytest.raises(UserError) as error:
    limits.check_table(table)
  assert message in str(error.value) and '\n' not in str(error.value)


def test_load_reads_and_checks_a_json_table(tmp_path):
  path = tmp_path / 'limits.json'
  path.write_text(json.dumps({'kl_from_base': ['up', 0.25]}))
  assert limits.load(path) == {'kl_from_base': ('up', 0.25)}
  path.write_text(json.dumps({'vibes': ['up', 0.25]}))
  with pytest.raises(UserError, match="unknown signal 'vibes'"):
    limits.load(path)
  with pytest.raises(UserError, match='cannot read'):
    limits.load(tmp_path / 'missing.json')
