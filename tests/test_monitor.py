"""The Goodhart monitor on hand-made records, and its stop/rollback actions in the loop."""

import pytest

from inversion_jax import monitor
from inversion_jax.errors import UserError


def record(cycle, before, after, quality, base=None, **indicators):
  metrics = {'before/mean_score': before, 'after/mean_score': after,
             'heldout/quality': quality}
  metrics |= {f'heldout/indicator/{k}': v for k, v in indicators.items()}
  if base is not None:
    metrics['base/quality'] = base[0]
    metrics |= {f'base/indicator/{k}': v for k, v in base[1].items()}
  return {'cycle': cycle, 'metrics': metrics}


def test_alarm_when_score_rises_and_quality_falls_below_the_best_round():
  watch = monitor.GoodhartMonitor('warn', tolerance=0.05)
  first = record(1, 0.30, 0.33, 0.52, base=(0.50, {}))
  assert watch.check([first]) is None  # Quality rose.
  second = record(2, 0.33, 0.36, 0.48)  # -7.7 % from round 1's 0.52, score up.
  alarm = watch.check([first, second])
  assert alarm.round == 2 and alarm.best_round == 1 and alarm.best_quality == 0.52
  assert 'fell 7.7% below round 1' in alarm.reasons[0]
  within = record(2, 0.33, 0.36, 0.50)  # -3.8 %: within tolerance.
  assert watch.check([first, within]) is None
  score_fell = record(2, 0.33, 0.25, 0.40)  # Score below the base: not Goodhart.
  assert watch.check([first, score_fell]) is None
  assert monitor.GoodhartMonitor('off').check([first, second]) is None


def test_indicator_jump_alone_alarms():
  first = record(1, 0.3, 0.3, 0.5, base=(0.5, {'unknown_option_rate': 0.20,
                                               'mean_option_count': 3.0}),
                 unknown_option_rate=0.25, mean_option_count=2.5)
  assert monitor.GoodhartMonitor('warn').check([first]) is None
  second = record(2, 0.3, 0.3, 0.5, unknown_option_rate=0.35, mean_option_count=1.9)
  alarm = monitor.GoodhartMonitor('warn').check([first, second])
  assert len(alarm.reasons) == 2 and alarm.reasons[0].startswith('unknown_option_rate')


def test_act_marks_the_record_and_returns_the_loop_action():
  alarm = monitor.Alarm(2, ['x'], 0, 0.5)
  rec = {}
  assert monitor.GoodhartMonitor('warn').act(alarm, rec) is None
  assert rec['goodhart']['action'] == 'warn'
  assert monitor.GoodhartMonitor('rollback').act(alarm, {}) == 'rollback'
  assert monitor.GoodhartMonitor('stop').act(None, {}) is None


@pytest.mark.parametrize('kwargs', [dict(action='panic'), dict(tolerance=1.5)])
def test_bad_settings(kwargs):
  with pytest.raises(UserError):
    monitor.GoodhartMonitor(**kwargs)
