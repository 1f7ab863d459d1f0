"""The Goodhart monitor on hand-made records, and its stop/rollback actions in the loop."""

import pytest

from inversion_jax.errors import UserError
from inversion_jax.goodhart import monitor


def record(cycle, before, after, quality, base=None, **indicators):
  metrics = {'before/mean_score': before, 'after/mean_score': after,
             'heldout/quality': quality}
  metrics |= {f'heldout/indicator/{k}': v for k, v in indicators.items()}
  if base is not None:
    metrics['base/quality'] = base[0]
    metrics |= {f'base/indicator/{k}': v for k, v in base[1].items()}
  return {'cycle': cycle, 'metrics': metrics}


def test_alarm_when_score_rises_and_quality_falls_delta_below_the_best_round():
  watch = monitor.GoodhartMonitor('warn', delta=0.04)
  first = record(1, 0.30, 0.33, 0.52, base=(0.50, {}))
  assert watch.check([first]) is None  # Quality rose.
  second = record(2, 0.33, 0.36, 0.48)  # 0.04 below round 1's 0.52, score up.
  alarm = watch.check([first, second])
  assert alarm.round == 2 and alarm.best_round == 1 and alarm.best_quality == 0.52
  assert 'fell 0.040 below round 1' in alarm.reasons[0]
  assert 'confirmed' not in alarm.reasons[0]
  third = record(3, 0.36, 0.37, 0.47)  # The second consecutive drop: the gold event.
  assert 'gold event confirmed' in watch.check([first, second, third]).reasons[0]
  within = record(2, 0.33, 0.36, 0.49)  # 0.03 below: within delta.
  assert watch.check([first, within]) is None
  score_fell = record(2, 0.33, 0.25, 0.40)  # Score below the base: not Goodhart.
  assert watch.check([first, score_fell]) is None
  assert monitor.GoodhartMonitor('off').check([first, second]) is None


def test_indicator_jump_alarms_in_the_gaming_direction_only():
  first = record(1, 0.3, 0.3, 0.5, base=(0.5, {'unknown_option_rate': 0.20,
                                               'mean_option_count': 3.0}),
                 unknown_option_rate=0.25, mean_option_count=2.5)
  assert monitor.GoodhartMonitor('warn').check([first]) is None
  fewer = record(2, 0.3, 0.3, 0.5, unknown_option_rate=0.25, mean_option_count=1.5)
  assert monitor.GoodhartMonitor('warn').check([first, fewer]) is None  # Not flag spam.
  second = record(2, 0.3, 0.3, 0.5, unknown_option_rate=0.35, mean_option_count=4.5)
  alarm = monitor.GoodhartMonitor('warn').check([first, second])
  assert alarm.reasons == ['option_count_drift 0.000 -> 0.500',
                           'unknown_option_rate 0.200 -> 0.350']
  looser = {'unknown_option_rate': ('up', 0.2)}
  assert monitor.GoodhartMonitor('warn', limits=looser).check([first, second]) is None


def test_act_marks_the_record_and_returns_the_loop_action():
  alarm = monitor.Alarm(2, ['x'], 0, 0.5)
  rec = {}
  assert monitor.GoodhartMonitor('warn').act(alarm, rec) is None
  assert rec['goodhart']['action'] == 'warn'
  assert monitor.GoodhartMonitor('rollback').act(alarm, {}) == 'rollback'
  assert monitor.GoodhartMonitor('stop').act(None, {}) is None


@pytest.mark.parametrize('kwargs', [dict(action='panic'), dict(delta=1.5), dict(delta=0.0),
                                    dict(delta=-0.1), dict(limits={'vibes': ('up', 1)})])
def test_bad_settings(kwargs):
  with pytest.raises(UserError):
    monitor.GoodhartMonitor(**kwargs)
