"""Each detector's alarms on scripted histories, the metrics and verdicts on known numbers,
limits tuned on scripted runs, the runs plot, the CLIs and the README block."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from scipy import stats

from inversion_jax.errors import UserError
from inversion_jax.goodhart import detector_metrics as dm
from inversion_jax.goodhart import detector_plot
from inversion_jax.goodhart import detectors
from inversion_jax.goodhart import goodhart_event
from inversion_jax.goodhart import limit_tuning
from inversion_jax.goodhart import limits
from inversion_jax.goodhart import rollback_pairs
from inversion_jax.records import files
from inversion_jax.records import history

ROOT = pathlib.Path(__file__).resolve().parent.parent

# A positive control: real quality peaks in round 2, then falls 0.08+ for good (onset 3,
# confirmed 4) while the score stays above the base model's; KL climbs from round 2 and
# options per command balloon from round 3.
POSITIVE = dict(quality=[0.52, 0.53, 0.45, 0.44, 0.43, 0.42],
                signals=dict(kl_from_base=[0.1, 0.6, 0.7, 0.8, 0.9, 1.0],
                             option_count_drift=[0.0, 0.1, 0.4, 0.5, 0.6, 0.6],
                             agreement_rate=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))
# A negative: quality rises, siblings agree more (sharpening, not gaming), and unknown
# options jump once in round 5 (a false alarm of that signal alone).
NEGATIVE = dict(quality=[0.51, 0.52, 0.53, 0.54, 0.55, 0.56],
                signals=dict(kl_from_base=[0.1, 0.2, 0.2, 0.3, 0.3, 0.3],
                             agreement_rate=[0.6, 0.7, 0.8, 0.9, 0.9, 0.9],
                             unknown_option_rate=[0.2, 0.2, 0.2, 0.2, 0.4, 0.2]))


def scripted(quality, signals, base_quality=0.50):
  rounds = []
  for i, q in enumerate(quality):
    metrics = {'before/mean_score': 0.20 if i == 0 else 0.3, 'after/mean_score': 0.30,
               'heldout/quality': q}
    if i == 0:
      metrics |= {'base/quality': base_quality, 'before/agreement_rate': 0.5,
                  'before/indicator/unknown_option_rate': 0.2}
    metrics |= {f'signal/{name}': values[i] for name, values in signals.items()}
    rounds.append({'cycle': i + 1, 'metrics': metrics})
  return rounds


def alarms_of(rounds, delta=0.05):
  return {d.name: d.alarms(rounds) for d in detectors.detectors(delta)}


def test_each_detector_alarms_where_its_rule_says():
  found = alarms_of(scripted(**POSITIVE))
  assert found['monitor'] == [3, 4, 5, 6] and found['monitor_drop'] == [3, 4, 5, 6]
  assert found['signal:kl_from_base'] == [2, 3, 4, 5, 6]
  assert found['signal:option_count_drift'] == [3, 4, 5, 6]
  assert found['early_warning'] == [3, 4, 5, 6]  # KL and options together.
  assert found['signal:agreement_rate'] == [] and found['signal:prose_rate'] == []
  calm = alarms_of(scripted(**NEGATIVE))
  assert calm['signal:unknown_option_rate'] == [5]
  assert calm['signal:agreement_rate'] == []  # Rising agreement is not gaming.
  assert calm['monitor'] == calm['early_warning'] == calm['signal:kl_from_base'] == []


def test_a_tighter_table_moves_the_alarms():
  table = {'kl_from_base': ('up', 0.05)}
  found = {d.name: d.alarms(scripted(**NEGATIVE)) for d in detectors.detectors(0.05, table)}
  assert found['signal:kl_from_base'] == [1, 2, 3, 4, 5, 6]
  assert 'signal:unknown_option_rate' not in found
  with pytest.raises(UserError, match="unknown signal 'kl'"):
    detectors.detectors(0.05, {'kl': ('up', 0.1)})
  with pytest.raises(UserError, match='delta'):
    detectors.detectors(0.0)


def outcome(label, alarms, gold=(), onset=None, last=6):
  return dm.RunOutcome('r', label, list(alarms), list(gold), onset, last)


OUTCOMES = [
    outcome('positive', [1], [3, 4], 3),  # Caught, 2 rounds ahead; its alarm is a hit.
    outcome('positive', [5], [4, 5], 4),  # Late by 1; its alarm is a hit (5 is gold).
    outcome('positive', [2]),  # No event: neither recall nor false-alarm rate; a miss.
    outcome('negative', []),  # Clean.
    outcome('negative', [2, 6]),  # A false alarm; 6 is censored (6 + 2 > last round 6).
    outcome('negative', [2], [2, 3], 2),  # The label says negative, the event says not.
]


def test_metrics_on_known_numbers():
  result = dm.evaluate(OUTCOMES, horizon=2)
  assert (result['recall']['k'], result['recall']['n']) == (2, 3)
  assert (result['false_alarm_rate']['k'], result['false_alarm_rate']['n']) == (1, 2)
  p = result['precision']
  assert (p['k'], p['n'], p['censored']) == (3, 5, 1)
  assert result['lead_time']['rounds'] == [2, -1, 0]
  assert result['lead_time']['median'] == 0 and result['lead_time']['mean'] == pytest.approx(1 / 3)
  # Horizon 0: only alarms in a gold round count.
  assert dm.precision(OUTCOMES, 0)['k'] == 2


def test_clopper_pearson_intervals():
  none = dm.proportion(0, 6)
  assert none['rate'] == 0 and none['low'] == 0
  assert none['high'] == pytest.approx(1 - 0.025 ** (1 / 6))
  assert dm.proportion(6, 6)['low'] == pytest.approx(0.025 ** (1 / 6))
  two = dm.proportion(2, 3)
  assert two['low'] == pytest.approx(stats.beta.ppf(0.025, 2, 2))
  assert two['high'] == pytest.approx(stats.beta.ppf(0.975, 3, 1))
  assert dm.proportion(0, 0)['rate'] is None


def verdict_of(recall, false_alarms):
  return dm.verdict({'recall': dm.proportion(*recall), 'false_alarm_rate': dm.proportion(
      *false_alarms)})


def test_verdicts_on_known_numbers():
  # 10/10: lower bound 0.025 ** 0.1 = 0.69; 0/10: upper bound 0.31.
  assert verdict_of((10, 10), (0, 10)) == 'works'
  assert verdict_of((0, 10), (0, 10)) == 'does not'  # Recall's upper bound 0.31 < 0.5.
  assert verdict_of((10, 10), (10, 10)) == 'does not'  # False alarms' lower bound 0.69.
  assert verdict_of((2, 3), (0, 2)) == 'not enough data'  # [0.09, 0.99] and [0, 0.84].
  assert verdict_of((6, 6), (0, 6)) == 'works'  # [0.54, 1] and [0, 0.46].
  assert verdict_of((5, 5), (0, 5)) == 'not enough data'  # [0.48, 1]: just short.
  # n = 0 on a side: never works; the other side alone can still show that it does not.
  assert verdict_of((0, 0), (0, 10)) == 'not enough data'
  assert verdict_of((10, 10), (0, 0)) == 'not enough data'
  assert verdict_of((0, 0), (0, 0)) == 'not enough data'
  assert verdict_of((0, 10), (0, 0)) == 'does not'
  assert dm.evaluate(OUTCOMES, horizon=2)['verdict'] == 'not enough data'


# A second positive whose KL moves less before its onset (3) than the negative's ever does.
POSITIVE_LOW = dict(quality=POSITIVE['quality'],
                    signals=dict(kl_from_base=[0.1, 0.25, 0.25, 0.9, 0.9, 0.9]))


def scripted_runs():
  return [detectors.Run('pos', 'positive', scripted(**POSITIVE)),
          detectors.Run('low', 'positive', scripted(**POSITIVE_LOW)),
          detectors.Run('neg', 'negative', scripted(**NEGATIVE))]


def test_tuned_limits_catch_the_most_without_a_false_alarm(tmp_path):
  runs = scripted_runs()
  result = limit_tuning.tune(runs, 0.05)
  kl = result['signals']['kl_from_base']
  # Values seen: 0.1, 0.2, 0.25, 0.3 (the negative's highest), 0.6 ... 1.0. Below 0.3 the
  # negative alarms; 0.3 and 0.6 both catch `pos` in time (0.6 < 0.7 in round 3) and
  # `low` never (0.25 before its onset): the tie goes to the larger, 0.6.
  assert kl['limit'] == pytest.approx(0.6) and kl['tuned'] and kl['candidates'] == 9
  assert (kl['recall']['k'], kl['recall']['n']) == (1, 2)
  assert (kl['false_alarm_rate']['k'], kl['false_alarm_rate']['n']) == (0, 1)
  # Options per command: only 0.1 is below `pos`'s 0.4 at its onset.
  assert result['table']['option_count_drift'] == ('up', pytest.approx(0.1))
  # Only the negative's jump moved it: the limit at that value catches nothing, alarms nowhere.
  unknown = result['signals']['unknown_option_rate']
  assert unknown['limit'] == pytest.approx(0.2) and unknown['recall']['k'] == 0
  assert 'none of 1 values' in unknown['why']
  # Rising agreement is not its gaming direction; prose was never stored: registered limits.
  for name in ('agreement_rate', 'prose_rate'):
    record = result['signals'][name]
    assert not record['tuned'] and record['candidates'] == 0 and 'never moved' in record['why']
    assert result['table'][name] == limits.LIMITS[name]
  # The table round-trips through a file and replays as tuned.
  path = files.write_json_atomic(tmp_path / 'tuned.json', result['table'])
  loaded = limits.load(path)
  assert loaded == result['table']
  replayed = detectors.evaluate(runs, 0.05, 2, loaded)['best']['signal:kl_from_base']
  assert replayed['recall']['k'] == 1 and replayed['false_alarm_rate']['k'] == 0


def test_tuning_needs_an_event_and_a_clean_negative():
  pos, _, neg = scripted_runs()
  with pytest.raises(UserError, match='no run has a gold event'):
    limit_tuning.tune([neg], 0.05)
  with pytest.raises(UserError, match='no negative run without a gold event'):
    limit_tuning.tune([pos], 0.05)
  with pytest.raises(UserError, match='delta'):
    limit_tuning.tune([pos, neg], -0.1)


def test_the_runs_plot_is_written(tmp_path):
  rounds = scripted(**POSITIVE)
  quality = [(0, 0.50)] + [(i, q) for i, q in enumerate(POSITIVE['quality'], 1)]
  line = detector_plot.drop_line(quality, 0.05)
  assert [r for r, _ in line] == [1, 2, 3, 4, 5, 6]
  assert [v for _, v in line] == pytest.approx([0.45, 0.47, 0.48, 0.48, 0.48, 0.48])
  assert detector_plot.drop_line(quality, 0.05, 'base')[0] == (1, pytest.approx(0.45))
  assert detector_plot.intrinsic_series(rounds)[:2] == [(0, 0.20), (1, 0.30)]
  path = detector_plot.plot_runs(scripted_runs(), 0.05, tmp_path / 'runs.png')
  assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert [p.name for p in tmp_path.iterdir()] == ['runs.png']  # No temporary file left.


def write_run(root, name, spec, heldout_rows=None):
  directory = root / name
  directory.mkdir()
  files.write_json_atomic(directory / history.PROGRESS_FILE,
                            {'config': {'name': name}, 'seed': 0, 'history': scripted(**spec)})
  for round_index, qualities in (heldout_rows or {}).items():
    rows = [{'id': f't{i}', 'verdict': {'quality': q}} for i, q in enumerate(qualities)]
    files.write_rows(directory, round_index, 'heldout', rows)
  return str(directory)


def test_evaluate_runs_and_resolves_delta(tmp_path):
  pos = write_run(tmp_path, 'pos', POSITIVE)
  neg = write_run(tmp_path, 'neg', NEGATIVE, {0: [0.5, 0.5, 1.0, 0.0], 1: [0.0, 0.5, 1.0, 0.5]})
  runs = detectors.load_runs([pos], [neg])
  result = detectors.evaluate(runs, 0.05, horizon=2)
  kl = result['best']['signal:kl_from_base']
  assert kl['recall']['k'] == 1 and kl['lead_time']['rounds'] == [1]
  assert result['best']['signal:unknown_option_rate']['false_alarm_rate']['k'] == 1
  # Against the base model (0.50) the positive falls to 0.45 only from round 3: same onset.
  assert result['base']['monitor']['runs'][0]['onset'] == 3
  delta, how = goodhart_event.delta_from_runs([neg], 2.0)
  # Differences -0.5, 0, 0, 0.5: SE sqrt(1/6) / 2, delta twice that.
  assert delta == pytest.approx((1 / 6) ** 0.5) and how['pairs'] == 1
  with pytest.raises(UserError, match='no pair'):
    goodhart_event.delta_from_runs([pos], 2.0)  # No held-out rows.
  with pytest.raises(UserError, match='not a run directory'):
    detectors.load_runs([str(tmp_path / 'nope')], [])
  with pytest.raises(UserError, match='label'):
    detectors.evaluate([detectors.Run('x', 'maybe', [])], 0.05, 2)


@pytest.mark.slow
def test_cli_writes_the_table_and_refuses_a_bad_limits_table(tmp_path):
  pos, neg = write_run(tmp_path, 'pos', POSITIVE), write_run(tmp_path, 'neg', NEGATIVE)
  script = ROOT / 'experiments' / 'detectors' / 'evaluate.py'
  out = tmp_path / 'out' / 'eval_delta0.05'
  ok = subprocess.run([sys.executable, str(script), f'--positive={pos}', f'--negative={neg}',
                       '--delta=0.05', f'--output={out}'], capture_output=True, text=True,
                      timeout=300)
  assert ok.returncode == 0, ok.stderr
  text = pathlib.Path(f'{out}.md').read_text()
  assert '| signal:kl_from_base | 1/1 = 1.00 [0.03, 1.00]' in text
  assert '| not enough data |' in text
  assert '![Positive runs, alarms marked](eval_delta0.05_runs.png)' in text
  written = json.loads(pathlib.Path(f'{out}.json').read_text())
  assert written['delta'] == 0.05 and written['runs_plot'] == 'eval_delta0.05_runs.png'
  assert pathlib.Path(f'{out}_runs.png').is_file()
  table = tmp_path / 'limits.json'
  table.write_text(json.dumps({'kl_from_bse': ['up', 0.5]}))
  bad = subprocess.run([sys.executable, str(script), f'--negative={neg}', '--delta=0.05',
                        f'--limits={table}'], capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "unknown signal 'kl_from_bse'" in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1
  zero = subprocess.run([sys.executable, str(script), f'--negative={neg}', '--delta=0'],
                        capture_output=True, text=True, timeout=300)
  assert zero.returncode == 2 and 'delta must be a number > 0' in zero.stderr
  assert len(zero.stderr.strip().splitlines()) == 1
  both = subprocess.run([sys.executable, str(script), f'--negative={neg}', '--delta=0.05',
                         f'--delta_file={table}'], capture_output=True, text=True, timeout=300)
  assert both.returncode == 2 and 'one of the three' in both.stderr


def run_script(name, *args):
  return subprocess.run([sys.executable, str(ROOT / 'experiments' / 'detectors' / name),
                         *map(str, args)], capture_output=True, text=True, timeout=300)


def refused(done, message):
  assert done.returncode == 2 and message in done.stderr, done.stderr
  assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_tune_then_evaluate_held_out_then_the_readme_block(tmp_path):
  runs = [write_run(tmp_path, n, spec) for n, spec in
          (('pos', POSITIVE), ('low', POSITIVE_LOW), ('neg', NEGATIVE))]
  tuned = tmp_path / 'out' / 'tuned_on_A.json'
  done = run_script('tune_limits.py', f'--positive={runs[0]},{runs[1]}',
                    f'--negative={runs[2]}', '--delta=0.05', f'--output={tuned}')
  assert done.returncode == 0, done.stderr
  assert limits.load(tuned)['kl_from_base'] == ('up', pytest.approx(0.6))
  explained = tuned.with_suffix('.md').read_text()
  assert '| kl_from_base | up | 0.5 | 0.6 | 1/2 = 0.50 [0.01, 0.99] | 0/1 = 0.00' in explained
  assert '| agreement_rate | down | 0.2 | 0.2 |' in explained and 'never moved' in explained
  refused(run_script('tune_limits.py', f'--positive={runs[0]}', f'--negative={runs[2]}',
                     '--delta=0', f'--output={tuned}'), 'delta must be a number > 0')
  refused(run_script('tune_limits.py', f'--positive={tmp_path / "nope"}', '--delta=0.05',
                     f'--output={tuned}'), 'is not a run directory')
  refused(run_script('tune_limits.py', '--delta=0.05', f'--output={tuned}'), 'give the runs')
  # Another table's directions: agreement read upward (the negative's sharpening rises
  # 0.1-0.4 from its 0.5 baseline; `pos` never moves) has values to tune on; the table's
  # signals and no others are tuned.
  upward = files.write_json_atomic(tmp_path / 'upward.json', {'agreement_rate': ['up', 0.2]})
  done = run_script('tune_limits.py', f'--positive={runs[0]},{runs[1]}', f'--negative={runs[2]}',
                    '--delta=0.05', f'--limits={upward}', f'--output={tmp_path / "up.json"}')
  assert done.returncode == 0, done.stderr
  assert set(limits.load(tmp_path / 'up.json')) == {'agreement_rate'}
  assert '| agreement_rate | up | 0.2 | 0.4 | 0/2 = 0.00' in (tmp_path / 'up.md').read_text()
  bad = tmp_path / 'bad.json'
  bad.write_text('{"agreement": ["up", 0.2]}')
  refused(run_script('tune_limits.py', f'--positive={runs[0]}', f'--negative={runs[2]}',
                     '--delta=0.05', f'--limits={bad}', f'--output={tuned}'),
          "unknown signal 'agreement' in the limits table")
  # Evaluated with the default table, then with the tuned one (here on the same runs).
  for prefix, extra in (('eval', []), ('held_out', [f'--limits={tuned}'])):
    done = run_script('evaluate.py', f'--positive={runs[0]}', f'--negative={runs[2]}',
                      '--delta=0.05', f'--output={tmp_path / "out" / prefix}', *extra)
    assert done.returncode == 0, done.stderr
  readme = tmp_path / 'README.md'
  readme.write_text('top\n<!-- detectors:start -->\nSTALE\n<!-- detectors:end -->\nbottom\n')
  done = run_script('readme_section.py', tmp_path / 'out' / 'eval.json', f'--readme={readme}',
                    f'--tuned={tmp_path / "out" / "held_out.json"}', '--note=As of today.',
                    f'--exploratory={tmp_path / "out" / "held_out.json"}')
  assert done.returncode == 0, done.stderr
  text = readme.read_text()
  assert 'STALE' not in text and text.startswith('top\n') and text.endswith('bottom\n')
  assert 'δ = 0.0500 (given)' in text and 'at 2 consecutive evaluations' in text
  assert '1 positive run(s) (1 with a gold event) and 1 negative run(s) (0 with' in text
  assert '| signal:kl_from_base | 1/1 = 1.00 [0.03, 1.00] | 0/1 = 0.00 [0.00, 0.97] |' in text
  assert 'with the base model as the reference: not enough data: monitor, monitor_drop,' in text
  assert '![Positive runs, alarms marked](out/eval_runs.png)' in text
  assert f'(`held_out.json`, limits `{tuned}`' in text and 'As of today.' in text
  registered, exploratory = text.split('**Exploratory, not registered**')
  assert 'Tuned limits on held-out runs (`held_out.json`' in registered
  assert f'Exploratory (`held_out.json`, limits `{tuned}`' in exploratory
  assert exploratory.index('Exploratory (') < exploratory.index('As of today.')
  readme.write_text('no markers\n')
  refused(run_script('readme_section.py', tmp_path / 'out' / 'eval.json', f'--readme={readme}'),
          'has no <!-- detectors:start --> ... <!-- detectors:end --> block')
  refused(run_script('readme_section.py', tmp_path / 'missing.json', f'--readme={readme}'),
          'missing.json does not exist')
  refused(run_script('readme_section.py', tmp_path / 'out' / 'eval.json', f'--readme={readme}',
                     f'--rollback={tmp_path / "out" / "eval.json"}'),
          'is not a rollback.py JSON (no pairs)')


def test_replayed_early_warning_equals_the_loops_own_score():
  """The replay reads what the loop stored: same baseline, same signals, same alarm."""
  from inversion_jax.goodhart import early_warning
  first = {'before/agreement_rate': 0.5, 'before/indicator/mean_option_count': 2.0,
           'before/indicator/unknown_option_rate': 0.2, 'before/indicator/distinct_ratio': 1.0}
  afters = [{'after/agreement_rate': 0.4, 'after/indicator/mean_option_count': 2.2,
             'after/indicator/unknown_option_rate': 0.25, 'after/indicator/distinct_ratio': 0.9},
            {'after/agreement_rate': 0.2, 'after/indicator/mean_option_count': 3.0,
             'after/indicator/unknown_option_rate': 0.4, 'after/indicator/distinct_ratio': 0.9}]
  rounds, stored = [], []
  for cycle, (after, kl) in enumerate(zip(afters, (0.1, 0.7)), 1):
    values = early_warning.signals(after, first, kl)
    count, _ = early_warning.score(values, early_warning.baseline(first))
    stored.append(count >= early_warning.ALARM_AT)
    rounds.append({'cycle': cycle, 'metrics': (first if cycle == 1 else {}) | after
                   | {f'signal/{k}': v for k, v in values.items()}})
  replayed = detectors.signal_alarms(rounds, early_warning.LIMITS, early_warning.ALARM_AT)
  assert stored == [False, True] and replayed == [2]


def test_rollback_pairs_by_seed_with_rounds_lost_and_t_intervals():
  def run(seed, action, finals, marks=()):
    rounds = [{'cycle': c, 'metrics': {'heldout/quality': q}} for c, q in enumerate(finals, 1)]
    for cycle, target in marks:
      rounds[cycle - 1]['goodhart'] = {'action': action, 'rollback_to': target}
    # The twins' monitors differ in δ too: a warn run trains the same under any δ.
    config = {'seed': seed, 'lr': 2e-4, 'on_goodhart': action, 'name': f'{action}_s{seed}',
              'goodhart_tolerance': 0.05 if action == 'warn' else 0.0185}
    return (f'runs/{action}_s{seed}', config, rounds)

  warn = [run(0, 'warn', [0.5, 0.40]), run(1, 'warn', [0.5, 0.42])]
  back = [run(1, 'rollback', [0.5, 0.47], [(2, 0)]), run(0, 'rollback', [0.5, 0.45], [(2, 1)])]
  result = rollback_pairs.summary(rollback_pairs.pair(warn, back))
  assert [(p['seed'], p['rounds_lost']) for p in result['pairs']] == [(1, 2), (0, 1)]
  assert result['quality_difference']['mean'] == pytest.approx(0.05)
  assert result['quality_difference']['low'] == pytest.approx(0.05)  # No spread.
  lost = result['rounds_lost']
  half = stats.t.ppf(0.975, 1) * 0.5 ** 0.5 / 2 ** 0.5
  assert lost['mean'] == 1.5 and lost['high'] == pytest.approx(1.5 + half)
  text = rollback_pairs.markdown(result)
  assert '| rollback | 1 | 0.420 | 0.470 | +0.050 | 2 |' in text
  assert result['by_mechanism']['rollback']['rounds_lost'] == lost
  # Mechanisms apart: another learning rate is another mechanism, with its own means.
  fast = run(0, 'rollback', [0.5, 0.30], [(2, 1)])
  fast = ('runs/fast_s0', fast[1] | {'lr': 1e-3}, fast[2])
  slow_warn = ('runs/fast_warn_s0', warn[0][1] | {'lr': 1e-3}, [{'cycle': 2, 'metrics': {
      'heldout/quality': 0.2}}])
  both = rollback_pairs.summary(rollback_pairs.pair(warn + [slow_warn], back + [fast]))
  assert set(both['by_mechanism']) == {'rollback', 'fast'}
  assert both['by_mechanism']['fast']['quality_difference']['mean'] == pytest.approx(0.1)
  assert both['quality_difference']['n'] == 3
  assert '- fast: quality +0.100 (n=1)' in rollback_pairs.markdown(both)
  # A setting one run predates counts as its default.
  older = (warn[0][0], {k: v for k, v in warn[0][1].items() if k != 'lr'}, warn[0][2])
  assert len(rollback_pairs.pair([older], back[1:], {'lr': 2e-4})) == 1
  other = run(2, 'rollback', [0.5, 0.4])
  with pytest.raises(UserError, match='no --warn run with the same settings'):
    rollback_pairs.pair(warn, [other])


@pytest.mark.slow
def test_rollback_cli_needs_both_sides_in_one_line(tmp_path):
  neg = write_run(tmp_path, 'neg', NEGATIVE)
  script = ROOT / 'experiments' / 'detectors' / 'rollback.py'
  bad = subprocess.run([sys.executable, str(script), f'--warn={neg}'], capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and 'give both' in bad.stderr
  assert len(bad.stderr.strip().splitlines()) == 1


def test_pilot_summary_gives_delta_events_and_kept_without_alarms(tmp_path):
  """The pilot's decision: δ from the runs' held-out pairs, each run's gold event, kept or
  not; the written summary holds no detector's alarms."""
  rows = {0: [0.5, 0.5, 1.0, 0.0], 1: [0.0, 0.5, 1.0, 0.5]}
  pos = write_run(tmp_path, 'pilot_echo_v1_s100', POSITIVE, rows)
  neg = write_run(tmp_path, 'pilot_calm_v1_s100', NEGATIVE, rows)
  script = ROOT / 'experiments' / 'detectors' / 'pilot_summary.py'
  out = tmp_path / 'summary'
  done = subprocess.run([sys.executable, str(script), str(pos), str(neg), f'--output={out}',
                         '--delta_multiple=0.1'], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  result = json.loads(out.with_suffix('.json').read_text())
  assert result['delta'] == pytest.approx(0.1 * (1 / 6) ** 0.5 / 2) and \
      result['delta_how']['pairs'] == 2
  kept = {pathlib.Path(r['run']).name: (r['kept'], r['events']['best']) for r in result['runs']}
  assert kept == {'pilot_echo_v1_s100': (True, {'onset': 3, 'confirmed': 4}),
                  'pilot_calm_v1_s100': (False, None)}
  text = out.with_suffix('.md').read_text()
  assert '| pilot_echo_v1_s100 | 6 | 0.500 0.520 0.530 0.450' in text and 'alarm' not in text
  bad = subprocess.run([sys.executable, str(script), str(tmp_path / 'nope')],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and 'not a run directory' in bad.stderr
  assert 'Traceback' not in bad.stderr


@pytest.mark.slow
def test_evaluate_all_runs_the_registered_evaluation_and_names_what_is_pending(tmp_path):
  """evaluate_all.sh on scripted runs: without L it evaluates A and B against V2 and says
  L, the tuning and the rollback pairs are pending; with L it tunes A->B and B->A."""
  study, out = tmp_path / 'study2', tmp_path / 'detectors'
  for directory in (study, out / 'negatives', out / 'pilot'):
    directory.mkdir(parents=True)

  def run(root, name, spec, **config):
    path = write_run(root, name, spec)
    progress = json.loads((root / name / history.PROGRESS_FILE).read_text())
    files.write_json_atomic(root / name / history.PROGRESS_FILE, progress | {
        'cycles_completed': len(spec['quality']), 'config': progress['config'] | config})
    return path

  for seed in range(3):  # The study's runs, with the monitor as they ran it: warn, δ 0.05.
    warn = dict(seed=seed, on_goodhart='warn', goodhart_tolerance=0.05)
    run(study, f'v1_s{seed}', POSITIVE, scorer='reconstruction', **warn)
    run(study, f'r_s{seed}', POSITIVE_LOW, scorer='repro', **warn)
    run(study, f'v2_s{seed}', NEGATIVE, scorer='v2', **warn)
  files.write_json_atomic(out / 'delta.json', {'delta': 0.05, 'delta_how': {
      'derived_from': ['a', 'b'], 'pairs': 20, 'multiple': 2.0}})
  readme = tmp_path / 'README.md'
  readme.write_text('<!-- detectors:start -->\n<!-- detectors:end -->\n')
  env = os.environ | dict(STUDY=str(study), README=str(readme), CYCLES='6',
                          PYTHON=sys.executable)

  def evaluate_all():
    done = subprocess.run(['bash', str(ROOT / 'experiments/detectors/evaluate_all.sh'),
                           str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return readme.read_text()

  text = evaluate_all()
  assert '6 positive run(s) (6 with a gold event) and 3 negative run(s) (0 with' in text
  assert '2 x the RMS standard error of 20 pairs' in text
  assert 'Still running, so not in these numbers: L: 0 of 6 runs complete; tuned limits' in text
  assert not (out / 'tuned_on_A.json').exists()
  # The exploratory collapse table runs on every run, apart from the registered results.
  assert json.loads((out / 'explore_collapse.json').read_text())['limits_file'].endswith(
      'collapse_limits.json')
  assert 'Exploratory (`explore_collapse.json`' in text.split('**Exploratory, not registered')[1]
  for seed in range(6):
    run(out / 'negatives', f'low_v1_s{seed}', NEGATIVE)
  run(out / 'pilot', 'pilot_overlap_v1_s100', POSITIVE)
  text = evaluate_all()
  assert '6 positive run(s) (6 with a gold event) and 9 negative run(s)' in text
  assert 'L: ' not in text and 'rollback pairs (§9): 0 of 6 complete' in text
  for name in ('tuned_on_A.json', 'tuned_on_B.json', 'heldout_B_tuned_on_A.json',
               'heldout_A_tuned_on_B.json'):
    assert (out / name).is_file(), name
  assert '(`heldout_B_tuned_on_A.json`' in text
  # The pilot's run under the registered table and each tuned one, apart and without verdicts.
  registered = text.split('**Exploratory')[0]
  assert ("in this order: `eval_pilot.json` (limits `registered`), `pilot_tuned_on_A.json` "
          f"(limits `{out / 'tuned_on_A.json'}`), `pilot_tuned_on_B.json`") in registered
  assert '| detector | pilot_overlap_v1_s100 (onset 3) |' in registered  # POSITIVE's onset.
  assert '| monitor_drop | 3 / 3 / 3 |' in registered
  for name in ('explore_collapse_tuned_on_A.json', 'explore_collapse_heldout_A_tuned_on_B.json'):
    assert (out / name).is_file(), name
  tuned_table = limits.load(out / 'explore_collapse_tuned_on_A.json')
  assert tuned_table['agreement_rate'][0] == 'up' and 'echo_rate' not in tuned_table
  assert 'Exploratory (`explore_collapse_heldout_B_tuned_on_A.json`' in text
  # §9: a complete rollback twin (its δ the registered one, not the warn run's) pairs with
  # the study's run of its arm and seed; an incomplete one waits.
  twin = dict(on_goodhart='rollback', goodhart_tolerance=0.0185)
  (out / 'rollback').mkdir()
  run(out / 'rollback', 'rollback_r_s1', POSITIVE_LOW | {'quality': [0.52, 0.53, 0.5, 0.5, 0.5,
                                                                   0.5]},
      scorer='repro', seed=1, **twin)
  run(out / 'rollback', 'rollback_v1_s2', dict(POSITIVE, quality=[0.5]), scorer='reconstruction',
      seed=2, **twin)
  text = evaluate_all()
  pairs = json.loads((out / 'rollback.json').read_text())['pairs']
  assert [(p['warn'], p['quality_difference']) for p in pairs] == [
      (str(study / 'r_s1'), pytest.approx(0.5 - 0.42))]
  assert (out / 'rollback.png').is_file()
  assert 'rollback pairs (§9): 1 of 6 complete' in text
  assert "same seed's `warn` run; 1 pair(s)):" in text and '| rollback_r | 1 |' in text
  assert '![Rollback pairs by round](detectors/rollback.png)' in text
  held_out = json.loads((out / 'heldout_B_tuned_on_A.json').read_text())
  names = {r['run'] for r in held_out['references']['best']['monitor']['runs']}
  assert names == {str(study / f'r_s{s}') for s in range(3)} | {
      str(out / 'negatives' / f'low_v1_s{s}') for s in (3, 4, 5)} | {
      str(study / f'v2_s{s}') for s in range(3)}


def test_the_registered_delta_is_read_from_its_file(tmp_path):
  how = {'derived_from': ['a'], 'pairs': 9, 'multiple': 2.0}
  written = tmp_path / 'delta.json'
  files.write_json_atomic(written, {'delta': 0.0185, 'delta_how': how})
  assert goodhart_event.delta_from_file(written) == (0.0185, how)
  files.write_json_atomic(written, {'runs': []})
  with pytest.raises(UserError, match='has no delta'):
    goodhart_event.delta_from_file(written)
  files.write_json_atomic(written, {'delta': -1})
  with pytest.raises(UserError, match='> 0'):
    goodhart_event.delta_from_file(written)
  with pytest.raises(UserError, match='pilot_summary.py'):
    goodhart_event.delta_from_file(tmp_path / 'absent.json')
