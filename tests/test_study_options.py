"""The study's run options on a tiny random model: the calibrated threshold
(--target_acceptance), the random_matched control and AFTER only where needed (--after_every)."""


import pytest

from inversion_jax import errors
from inversion_jax.errors import UserError
from inversion_jax.loop import experiment, presets, rounds, selection
from inversion_jax.records import files
from inversion_jax.records import console
from inversion_jax.records import history
from tests.tiny_run import config_for, round_metrics, run_driver

STUDY = dict(cycles=2, target_acceptance=0.5, threshold=0.5)


def _phase_scores(run_dir, round_index, phase):
  return [r['score'] for r in files.read_rows(files.rows_path(run_dir, round_index, phase))]


@pytest.mark.slow
def test_calibrated_threshold_is_fixed_for_every_round_and_shared_by_the_arms(tiny_gguf, tmp_path):
  """Round 1's BEFORE sets the threshold; V1 and random_matched on one seed get the same one,
  random_matched keeps exactly as many candidates as it does, every phase, also after resume."""
  v1 = experiment.run(config_for(tiny_gguf, tmp_path / 'v1', **STUDY))
  experiment.run(config_for(tiny_gguf, tmp_path / 'r', filter='random_matched',
                            **STUDY | dict(cycles=1)))
  matched = experiment.run(config_for(tiny_gguf, tmp_path / 'r', filter='random_matched',
                                      **STUDY), resume=True)  # Round 2 after a restart.
  calibration = v1.rounds[0]['calibration']
  expected = selection.calibrate_threshold(_phase_scores(tmp_path / 'v1' / 'run', 1, 'before'), 0.5)
  assert (calibration['threshold'], calibration['kept_fraction']) == expected
  assert calibration['target_acceptance'] == 0.5 and calibration['num_scores'] == 6
  assert matched.rounds[0]['calibration'] == calibration  # Same seed, same round-1 scores.
  assert 'calibration' not in v1.rounds[1]
  for result in (v1, matched):
    for record in result.rounds:
      for phase in ('before', 'after'):
        m = record['metrics']
        assert m[f'{phase}/threshold'] == calibration['threshold']
        assert m[f'{phase}/num_accepted'] == m[f'{phase}/passed_threshold']
  assert v1.rounds[0]['metrics']['before/acceptance_rate'] == calibration['kept_fraction']
  assert 'before/kept_also_passing' in matched.rounds[0]['metrics']
  # Round 1 BEFORE is shared: the same candidates, only the kept ones differ.
  assert _phase_scores(tmp_path / 'r' / 'run', 1, 'before') == _phase_scores(
      tmp_path / 'v1' / 'run', 1, 'before')
  report = (tmp_path / 'v1' / 'run' / 'report.md').read_text()
  assert f'threshold {calibration["threshold"]:.4f}, calibrated on round 1' in report


@pytest.mark.slow
def test_after_only_in_the_last_round_completes_resumes_and_reports(tiny_gguf, tmp_path,
                                                                     monkeypatch):
  """--after_every=0 over 3 rounds: AFTER in round 3 only; a run stopped in round 3 resumes to
  the same records; the report reads rounds 1-2's change from the next BEFORE (marked †)."""
  straight = config_for(tiny_gguf, tmp_path / 'straight', cycles=3, after_every=0)
  result = experiment.run(straight)
  for record in result.rounds[:2]:
    assert 'after/mean_score' not in record['metrics'] and record['after_skipped_reason']
    assert record['metrics']['signal/measured_after'] == 0.0
    assert record['after']['mean_score'] is None  # The original's block: null, not zero.
    assert 'delta/mean_score' not in record['metrics']
  assert 'after/mean_score' in result.rounds[2]['metrics']
  assert not files.rows_path(straight.run_dir, 1, 'after').exists()
  report = (straight.run_dir / 'report.md').read_text()
  second_before = result.rounds[1]['metrics']['before/mean_score']
  assert '| 1 | ' in report and f'{second_before:.3f} †' in report
  summary = history.summarize(result.rounds)
  assert summary['last_after_mean_score'] == result.rounds[2]['metrics']['after/mean_score']
  assert 'n/a' in console.format_round_table(result.rounds[0])

  broken = config_for(tiny_gguf, tmp_path / 'broken', cycles=3, after_every=0)
  real_run_round = rounds.run_round

  def stop_in_round_3(exp, lora, round_index, *args):
    if round_index == 3:
      raise KeyboardInterrupt
    return real_run_round(exp, lora, round_index, *args)

  monkeypatch.setattr(rounds, 'run_round', stop_in_round_3)
  with pytest.raises(errors.Interrupted, match='rounds 1-2 are saved'):  # Ctrl-C, reported.
    experiment.run(broken)
  monkeypatch.setattr(rounds, 'run_round', real_run_round)
  experiment.run(broken, resume=True)
  assert round_metrics(broken.run_dir) == round_metrics(straight.run_dir)
  assert (broken.run_dir / 'report.md').read_text().count('†') >= 2


def test_after_every_k_and_the_preset():
  config = experiment.RunConfig(cycles=7, after_every=3)
  assert [r for r in range(1, 8) if rounds.runs_after(config, r)] == [3, 6, 7]
  assert [r for r in range(1, 8) if rounds.runs_after(config.__class__(cycles=7), r)] == list(
      range(1, 8))
  assert [r for r in range(1, 8) if rounds.runs_after(
      experiment.RunConfig(cycles=7, after_every=0), r)] == [7]
  # The original keeps before/after per cycle unless --after_every is given explicitly.
  assert presets.apply(experiment.RunConfig(after_every=0),
                       'original').evaluation.after_every == 1
  assert presets.apply(experiment.RunConfig(after_every=0), 'original',
                       explicit=['after_every']).evaluation.after_every == 0


@pytest.mark.parametrize('overrides, message', [
    (dict(target_acceptance=1.0), r'--target_acceptance must be a fraction in \(0, 1\)'),
    (dict(target_acceptance=0.0), r'--target_acceptance must be a fraction in \(0, 1\)'),
    (dict(after_every=-1), '--after_every must be >= 0'),
])
def test_bad_study_settings_are_user_errors(overrides, message):
  with pytest.raises(UserError, match=message):
    experiment.RunConfig(**overrides).validate()


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
  common = ['--model=no-such-model', f'--output={tmp_path}', '--name=x']
  cases = {
      '--target_acceptance must be a fraction in (0, 1)': ['--target_acceptance=1.5'],
      '--filter=random_matched keeps as many candidates as a threshold would: give --threshold '
      'or --target_acceptance': ['--filter=random_matched'],
      'give --threshold or --target_acceptance (which calibrates it), not both': [
          '--threshold=0.3', '--target_acceptance=0.6'],
  }
  for message, args in cases.items():
    result = run_driver(common + args)
    assert result.returncode == 2, result.stderr[-1500:]
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f'error: {message}')


def test_study_launcher_lists_the_runs_and_rejects_bad_input(tmp_path):
  """The launcher's --status (nothing started) and its one-line errors; no run is started."""
  import os
  import subprocess
  import sys
  from tests.tiny_run import ROOT
  script = ROOT / 'experiments' / 'study' / 'run_study.sh'
  env = os.environ | dict(STUDY_ROOT=str(tmp_path / 'study'), PYTHON=sys.executable)

  def launch(*args, **extra):
    return subprocess.run(['bash', str(script), *args], capture_output=True, text=True,
                          env=env | extra, timeout=120)

  status = launch('HEAD', '--status')
  assert status.returncode == 0, status.stderr
  assert status.stdout.split('\n')[:4] == ['v1_s0 0/? rounds', 'r_s0 0/? rounds',
                                           'v2_s0 0/? rounds', 'v1_s1 0/? rounds']
  assert len(status.stdout.strip().splitlines()) == 9
  assert launch('HEAD', '--status', SEEDS='4', ARMS='r').stdout == 'r_s4 0/? rounds\n'
  assert launch('HEAD', '--status', SEEDS='100', ARMS='v1',
                NAME_PREFIX='pilot_overlap_').stdout == 'pilot_overlap_v1_s100 0/? rounds\n'
  for args, extra, message in ((('no-such-commit',), {}, 'is not a commit'),
                               (('HEAD', '--status'), dict(ARMS='v3'), 'no settings for arm v3'),
                               (('HEAD', '--status'), dict(NAME_PREFIX='a/b'), 'NAME_PREFIX'),
                               (('HEAD', '--bogus'), {}, 'unknown option --bogus')):
    bad = launch(*args, **extra)
    assert bad.returncode == 2 and bad.stderr.strip().startswith('error: ') and message in bad.stderr
  assert not (tmp_path / 'study').exists()  # Nothing made by --status or bad input.


FAKE_RUN = r'''#!/bin/bash
# Stands in for the interpreter: `-c` runs the real one; a run adds one completed round to
# progress.json every 0.5 s up to 10, and is killed (SIGKILL) once, in its first attempt.
if [[ $1 == -c ]]; then exec "$REAL_PYTHON" "$@"; fi
for a in "$@"; do case $a in --name=*) name=${a#--name=};; --output=*) out=${a#--output=};; esac; done
mkdir -p "$out/$name"; f="$out/$name/progress.json"; echo "$*" >> "$out/$name.args"
while true; do
  n=$("$REAL_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycles_completed"])' "$f" 2>/dev/null || echo 0)
  (( n >= 10 )) && exit 0
  sleep 0.5; echo "{\"cycles_completed\": $((n+1))}" > "$f"
  if [[ ! -e $out/$name.killed ]]; then touch "$out/$name.killed"; kill -9 $$; fi
done
'''


@pytest.mark.slow
def test_study_launcher_resumes_killed_runs_and_restarts_after_each_round(tmp_path):
  """A run killed by SIGKILL resumes; with RESTART_EVERY=3 a run is resumed in a fresh
  process after every 3 completed rounds, and the lane still finishes it (fake interpreter)."""
  import os
  import subprocess
  import sys
  from tests.tiny_run import ROOT
  import shutil
  if shutil.which('taskset') is None:
    pytest.skip('the launcher pins its lanes with taskset (util-linux), not on this machine')
  fake = tmp_path / 'python'
  fake.write_text(FAKE_RUN)
  fake.chmod(0o755)
  env = os.environ | dict(STUDY_ROOT=str(tmp_path / 'study'), PYTHON=str(fake),
                          REAL_PYTHON=sys.executable, ARMS='r', SEEDS='0', LANES='1',
                          POLL_SECONDS='0.2', RESTART_EVERY='3', NAME_PREFIX='pilot_',
                          EXTRA_FLAGS='--weights=0.8,0.1,0.1 --epochs=3')
  try:
    result = subprocess.run(['bash', str(ROOT / 'experiments' / 'study' / 'run_study.sh'),
                             'HEAD', '--foreground'], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / 'study' / 'logs' / 'pilot_r_s0.log').read_text().splitlines()
    calls = (tmp_path / 'study' / 'runs' / 'pilot_r_s0.args').read_text().splitlines()
    assert len(calls) >= 3 and all(  # EXTRA_FLAGS after the flag files, on every resume.
        call.split().index('--weights=0.8,0.1,0.1') > call.split().index(
            next(a for a in call.split() if a.endswith('r.flags'))) and '--epochs=3' in call
        for call in calls)
    assert any('FAILED' in line and 'exit 137' in line for line in log)
    assert any('resumes after exit 137' in line for line in log)
    assert sum('restarts after round' in line for line in log) >= 2
    assert log[-1].startswith('== pilot_r_s0 done')
  finally:
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force',
                    str(tmp_path / 'study' / 'src')], capture_output=True)
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'prune'], capture_output=True)


@pytest.mark.slow
def test_positives_launcher_runs_each_mechanism_with_its_flags(tmp_path):
  """The detectors' positive controls: the pilot (one V1 run per mechanism on seed 100) and
  the registered runs (seeds 0-2, the registered δ as the monitor's tolerance, and their
  rollback twins), at the study's flag files with the mechanism's flags after them; two
  lanes; status and collected files (fake interpreter, as above)."""
  import os
  import shutil
  import subprocess
  import sys
  from tests.tiny_run import ROOT
  if shutil.which('taskset') is None:
    pytest.skip('the launcher pins its lanes with taskset (util-linux), not on this machine')
  fake = tmp_path / 'python'
  fake.write_text(FAKE_RUN)
  fake.chmod(0o755)
  script = ROOT / 'experiments' / 'detectors' / 'positives.sh'
  env = os.environ | dict(STUDY_ROOT=str(tmp_path / 'study'), PYTHON=str(fake),
                          REAL_PYTHON=sys.executable, POLL_SECONDS='0.2', RESTART_EVERY='0',
                          MECHANISMS='overlap strict')

  def launch(*args, **extra):
    return subprocess.run(['bash', str(script), 'HEAD', *args], capture_output=True, text=True,
                          env=env | extra, timeout=120)

  def calls(name):
    return [call.split() for call in
            (tmp_path / 'study' / 'runs' / f'{name}.args').read_text().splitlines()]

  for extra, message in ((dict(MECHANISMS='overlap echo'), 'unknown mechanism echo'),
                         (dict(STAGE='positives'), 'STAGE=positives needs DELTA'),
                         (dict(STAGE='positives', DELTA='0'), 'STAGE=positives needs DELTA'),
                         (dict(ON_GOODHART='rollback'), 'ON_GOODHART=rollback is for'),
                         (dict(STAGE='final'), 'unknown STAGE final')):
    bad = launch('--status', **extra)
    assert bad.returncode == 2 and bad.stderr.strip().startswith(f'error: {message}'), extra
  assert not (tmp_path / 'study').exists()
  try:
    done = launch('--foreground')
    assert done.returncode == 0, done.stderr
    expected = {'overlap': '--weights=0.8,0.1,0.1', 'strict': '--target_acceptance=0.2'}
    for mechanism, flag in expected.items():
      for words in calls(f'pilot_{mechanism}_v1_s100'):
        assert words.index(flag) > words.index(next(w for w in words if w.endswith('v1.flags')))
        assert '--seed=100' in words and f'--name=pilot_{mechanism}_v1_s100' in words
        assert not any(w.startswith(('--goodhart_tolerance', '--on_goodhart')) for w in words)
    assert launch('--status').stdout == ('pilot_overlap_v1_s100 10/10 rounds\n'
                                         'pilot_strict_v1_s100 10/10 rounds\n')
    registered = dict(STAGE='positives', DELTA='0.059', MECHANISMS='strict', SEEDS='0 1')
    assert launch('--foreground', **registered).returncode == 0
    assert launch('--foreground', ON_GOODHART='rollback', **registered).returncode == 0
    for seed in (0, 1):
      warn, = {tuple(c) for c in calls(f'positive_strict_v1_s{seed}')}
      back, = {tuple(c) for c in calls(f'positive_strict_rollback_v1_s{seed}')}
      assert '--goodhart_tolerance=0.059' in warn and '--target_acceptance=0.2' in warn
      # The twins differ in --on_goodhart (after the flag files) and the name alone.
      assert [w for w in back if w not in warn] == [
          '--on_goodhart=rollback', f'--name=positive_strict_rollback_v1_s{seed}']
    for run in (tmp_path / 'study' / 'runs').glob('pilot_*_v1_s100'):
      (run / 'rows').mkdir()  # The fake writes progress only.
    collected = launch('--collect', str(tmp_path / 'pilot'))
    assert collected.returncode == 0, collected.stderr
    assert sorted(p.name for p in (tmp_path / 'pilot').iterdir()) == [
        'pilot_overlap_v1_s100', 'pilot_strict_v1_s100']
  finally:
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force',
                    str(tmp_path / 'study' / 'src')], capture_output=True)
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'prune'], capture_output=True)
