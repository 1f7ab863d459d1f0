"""results_section.py: arms named by their filter, the pre-registered decision, the block."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from inversion_jax.records import files
from inversion_jax.records import history

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'experiments'))
import compare_runs  # noqa: E402
import results_section  # noqa: E402

BASE = [0.2, 0.4, 0.6, 0.8]
FILTERS = {'R': 'random_matched', 'V1': 'threshold', 'V2': 'reproducibility'}


def make_run(root, arm, seed, shift, score):
  """A 4-round run: held-out rows of the base model and of rounds 1-4 (each task + shift
  from round 2 on), AFTER in the last round only (the study's --after_every=0)."""
  directory = root / f'{arm}_s{seed}'
  config = {'name': directory.name, 'seed': seed, 'filter': FILTERS[arm], 'threshold': 0.2}
  rounds = []
  for cycle in range(1, 5):
    last = [b + (shift if cycle > 1 else 0.0) for b in BASE]
    metrics = {'before/mean_score': 0.25 if cycle == 1 else score + cycle / 100,
               'heldout/quality': float(np.mean(last)), 'heldout/strict': 0.0}
    if cycle == 4:
      metrics['after/mean_score'] = score + 0.05
    if cycle == 1:
      metrics |= {'base/quality': float(np.mean(BASE)), 'base/strict': 0.0}
    metrics['train/num_examples'] = 10 * cycle + seed
    rounds.append({'cycle': cycle, 'metrics': metrics, 'timings': {'total': 60.0 * cycle}})
    files.write_rows(directory, cycle, 'heldout', rows(last))
  files.write_rows(directory, 0, 'heldout', rows(BASE))
  files.write_json_atomic(directory / history.PROGRESS_FILE,
                          {'config': config, 'seed': seed, 'history': rounds})
  return directory


def rows(quality):
  return [{'id': f'nmap-{i:03d}', 'tool': 'nmap', 'command': 'nmap -sV 172.31.9.14',
           'nlc2cmd': q, 'verdict': {'ok': False, 'quality': q, 'reasons': []}}
          for i, q in enumerate(quality)]


def compare(dirs, last_rounds=3):
  groups = compare_runs.group_runs(dirs)
  return json.loads(json.dumps({
      'groups': compare_runs.table(groups),
      'per_task': compare_runs.task_table(groups, resamples=200, last_rounds=last_rounds),
      'early_warning': compare_runs.early_warning_evaluation(groups)}))


@pytest.fixture
def study(tmp_path, monkeypatch):
  """R, V1 and V2 on seeds 0 and 1; V1 is 0.05 below R, V2 0.01 above; V1 scores higher."""
  monkeypatch.chdir(tmp_path)
  shifts, scores = {'R': 0.10, 'V1': 0.05, 'V2': 0.11}, {'R': 0.30, 'V1': 0.40, 'V2': 0.30}
  runs = {arm: [make_run(tmp_path, arm, s, shifts[arm], scores[arm]) for s in (0, 1)]
          for arm in ('R', 'V1', 'V2')}
  return (compare(runs['R'] + runs['V1'] + runs['V2']),
          compare(runs['V2'] + runs['V1'] + runs['R']))


def test_arms_are_named_by_filter_not_by_the_v1_prefix():
  assert results_section.arm_of('V1 (random_matched)') == 'R'
  assert results_section.arm_of('V1 (threshold)') == 'V1'
  assert results_section.arm_of('V2 (m=2, s=0.6, w=[0.6, 0.4])') == 'V2'
  assert results_section.arm_of('V1 (threshold, on_goodhart=rollback)') == 'V1'


@pytest.mark.parametrize('interval, score, verdict', [
    ({'low': -0.06, 'high': -0.03}, 0.01, 'supports'),
    ({'low': -0.06, 'high': -0.03}, -0.01, 'inconclusive'),  # V1's score below R's.
    ({'low': -0.06, 'high': -0.03}, None, 'inconclusive'),
    ({'low': -0.02, 'high': 0.04}, 0.01, 'contradicts'),
    ({'low': -0.02, 'high': -0.01}, 0.01, 'smaller than the original'),  # Both hold.
    ({'low': -0.02, 'high': -0.01}, -0.01, 'contradicts'),
    ({'low': -0.05, 'high': 0.01}, 0.01, 'inconclusive'),
])
def test_decision_rule_on_known_intervals(interval, score, verdict):
  assert verdict in results_section.decide(interval, score, margin=0.025)


def test_late_score_reads_next_before_and_the_last_after(tmp_path):
  run = make_run(tmp_path, 'V1', 0, 0.0, 0.40)
  rounds = json.loads((run / history.PROGRESS_FILE).read_text())['history']
  # Rounds 2-4's adapters: BEFORE of rounds 3, 4 (0.43, 0.44) and round 4's AFTER (0.45).
  assert results_section.late_score(rounds, 3) == pytest.approx(np.mean([0.43, 0.44, 0.45]))
  assert results_section.late_score(rounds[:3], 3) is None  # Round 3 has no AFTER, no next.


def test_section_applies_the_decision_and_lists_each_difference_once(study):
  text = results_section.section(list(study))
  assert 'Delta(V1 - R)**' in text and '**-0.050 [-0.050, -0.050]**' in text
  assert 'sign per seed --' in text
  # V1's late score (rounds 2-4): 0.40 + [0.03, 0.04, 0.05] vs R's 0.30 + the same.
  assert "minus R's: +0.100 (per seed 0: +0.100, 1: +0.100)" in text
  assert "**supports the original's claim at 135M**" in text
  assert '| V1 - R | real quality (graded) | -0.050 [' in text
  assert '| V2 - R | real quality (graded) | +0.010 [' in text
  assert '| V1 - V2 | real quality (graded) | -0.060 [' in text
  assert '| R - V2 |' not in text  # The reverse of V2 - R, from the second file.
  assert '| measure (base -> last round) | ours R | ours V1 | ours V2 | original V1' in text
  assert 'random_matched' not in text
  assert 'seeds in order): R 10, 10; V1 10, 10; V2 10, 10.' in text  # 1 + 2 + 3 + 4 min.
  assert 'seeds in order): R 100, 104; V1 100, 104; V2 100, 104.' in text  # 10 + ... + 40.


def test_cli_replaces_the_block_and_refuses_bad_input(study, tmp_path):
  for index, result in enumerate(study):
    (tmp_path / f'compare{index}.json').write_text(json.dumps(result))
  (tmp_path / 'compare0.png').write_bytes(b'')  # compare_runs' plot beside its JSON.
  readme = tmp_path / 'RESULTS.md'
  readme.write_text(f'top\n{results_section.START}\nSTALE\n{results_section.END}\nbottom\n')
  script = ROOT / 'experiments' / 'results_section.py'

  def run(*args):
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)

  summary = tmp_path / 'README.md'
  summary.write_text(f'intro\n{results_section.SUMMARY_START}\nOLD\n'
                     f'{results_section.SUMMARY_END}\nrest\n')
  done = run('compare0.json', 'compare1.json', f'--readme={readme}', '--note=state',
             f'--summary={summary}')
  assert done.returncode == 0, done.stderr
  text = readme.read_text()
  assert 'STALE' not in text and text.startswith('top\n') and text.endswith('bottom\n')
  assert 'Decision (margin 0.025)' in text and text.count('\nstate\n') == 1
  assert '](compare0.png)' in text and '"V1 (random_matched)" is R' in text
  short = summary.read_text()
  assert 'OLD' not in short and short.startswith('intro\n') and short.endswith('rest\n')
  assert "**supports the original's claim at 135M**" in short
  assert 'V2 - R: +0.010 [' in short and 'V1 - V2: -0.060 [' in short
  assert '| graded quality change (%) |' in short and '| -11 (undisclosed measure) |' in short
  assert '| options/cmd change |' not in short  # The long table stays on the page.
  page = f'top\n{results_section.START}\nSTALE\n{results_section.END}\n'
  readme.write_text(page)
  for args, message in ((['missing.json'], 'does not exist'),
                        (['compare0.json', '--readme=compare1.json'], 'has no'),
                        (['compare0.json', f'--readme={readme}', '--summary=compare1.json'],
                         'has no'),
                        (['compare0.json', f'--readme={readme}', '--summary=absent.md'],
                         'does not exist')):
    done = run(*args)
    assert done.returncode != 0 and message in done.stderr and 'Traceback' not in done.stderr
  assert readme.read_text() == page  # A bad summary file: the page is not written either.


FAKE_COMPARE = r'''#!/bin/bash
# Stands in for the interpreter: the snapshot's compare_runs.py records its arguments and
# writes the prepared JSON to its --output; anything else runs the real interpreter.
if [[ $1 == */experiments/compare_runs.py ]]; then
  echo "$*" >> "$CALLS"
  for a in "$@"; do case $a in --output=*) out=${a#--output=};; esac; done
  which=compare0; [[ $2 == */v2_s0 ]] && which=compare1
  cp "$PREPARED/$which.json" "$out.json"; exit 0
fi
exec "$REAL_PYTHON" "$@"
'''


@pytest.mark.slow
def test_analyze_waits_for_every_run_then_runs_the_registered_commands(study, tmp_path):
  """analyze.sh: one line and nothing written while a run is short of its rounds; then the
  snapshot's compare_runs twice (R first, V2 first) and the page's block (fake compare)."""
  import os
  import shutil
  for index, result in enumerate(study):
    (tmp_path / f'compare{index}.json').write_text(json.dumps(result))
  runs = tmp_path / 'study2'
  for arm in ('r', 'v1', 'v2'):
    for seed in (0, 1, 2):
      (runs / f'{arm}_s{seed}').mkdir(parents=True)
      files.write_json_atomic(runs / f'{arm}_s{seed}' / 'progress.json',
                              {'cycles_completed': 9 if (arm, seed) == ('v2', 2) else 10})
  page = tmp_path / 'RESULTS.md'
  page.write_text(f'top\n{results_section.START}\n{results_section.END}\n')
  summary = tmp_path / 'README.md'
  summary.write_text(f'{results_section.SUMMARY_START}\n{results_section.SUMMARY_END}\n')
  fake = tmp_path / 'python'
  fake.write_text(FAKE_COMPARE)
  fake.chmod(0o755)
  env = os.environ | dict(STUDY_ROOT=str(tmp_path / 'snapshot'), PYTHON=str(fake),
                          REAL_PYTHON=sys.executable, CALLS=str(tmp_path / 'calls'),
                          PREPARED=str(tmp_path))

  def analyze():
    return subprocess.run(['bash', str(ROOT / 'experiments' / 'study' / 'analyze.sh'), 'HEAD',
                           str(runs), str(page), str(summary)], capture_output=True, text=True, env=env,
                          timeout=300)

  short = analyze()
  assert short.returncode == 2 and short.stderr.strip() == (
      f'error: {runs}/v2_s2 has 9 of 10 rounds: the analysis waits for every run')
  assert not (tmp_path / 'snapshot').exists() and not (tmp_path / 'calls').exists()
  files.write_json_atomic(runs / 'v2_s2' / 'progress.json', {'cycles_completed': 10})
  try:
    done = analyze()
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / 'calls').read_text().splitlines()
    assert [c.split()[3].rsplit('/', 1)[1] for c in calls] == ['r_s0', 'v2_s0']
    assert all(c.split()[0].startswith(str(tmp_path / 'snapshot' / 'src')) for c in calls)
    assert all('--last_rounds=3 --resamples=10000' in c for c in calls)
    assert calls[0].endswith(f'--output={runs}/compare')
    text = page.read_text()
    assert 'Decision (margin 0.025)' in text and 'analyze.sh' in text
    assert 'Decision (margin 0.025)' in summary.read_text()
  finally:
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'remove', '--force',
                    str(tmp_path / 'snapshot' / 'src')], capture_output=True)
    subprocess.run(['git', '-C', str(ROOT), 'worktree', 'prune'], capture_output=True)
    shutil.rmtree(tmp_path / 'snapshot', ignore_errors=True)
