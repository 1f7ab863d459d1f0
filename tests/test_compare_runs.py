"""compare_runs.py on hand-made run directories: grouping, t intervals, refusals."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from inversion_jax.records import files
from inversion_jax.records import history

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'experiments'))
import compare_runs  # noqa: E402


def make_run(root, name, seed, quality_end, filter_name='threshold', lr=2e-4, early=(), **extra):
  config = {'name': name, 'seed': seed, 'filter': filter_name, 'lr': lr, 'threshold': 0.2} | extra
  rounds = []
  for cycle, (score, quality) in enumerate([(0.30, 0.40), (0.33, quality_end)], 1):
    metrics = {'before/mean_score': 0.25, 'after/mean_score': score,
               'before/acceptance_rate': 0.4, 'after/acceptance_rate': 0.5,
               'heldout/quality': quality, 'heldout/strict': 0.05}
    if cycle == 1:
      metrics |= {'base/quality': 0.40, 'base/strict': 0.05}
    metrics['signal/alarm'] = float(cycle in early)
    rounds.append({'cycle': cycle, 'metrics': metrics})
  directory = root / name
  directory.mkdir()
  files.write_json_atomic(directory / history.PROGRESS_FILE,
                            {'config': config, 'seed': seed, 'history': rounds})
  return directory


def test_groups_means_and_t_intervals(tmp_path):
  dirs = [make_run(tmp_path, f'v1_{s}', s, q) for s, q in ((0, 0.36), (1, 0.38), (2, 0.34))]
  dirs += [make_run(tmp_path, f'v2_{s}', s, 0.40, 'reproducibility') for s in (0, 1)]
  result = compare_runs.table(compare_runs.group_runs(dirs))
  v1 = result['V1 (threshold)']['measures']['graded quality change (%)']
  changes = np.array([-10.0, -5.0, -15.0])
  half = stats.t.ppf(0.975, 2) * changes.std(ddof=1) / np.sqrt(3)
  assert v1['n'] == 3 and v1['mean'] == pytest.approx(-10.0)
  assert v1['ci_low'] == pytest.approx(-10.0 - half) and v1['ci_high'] == pytest.approx(
      -10.0 + half)
  v2 = [v for k, v in result.items() if k.startswith('V2')][0]['measures']
  assert v2['graded quality change (%)']['mean'] == pytest.approx(0.0)
  score = result['V1 (threshold)']['measures']['intrinsic score change (%)']['mean']
  assert score == pytest.approx(100 * (0.33 - 0.25) / 0.25)
  gap = result['V1 (threshold)']['measures']['Goodhart gap (points)']['mean']
  assert gap == pytest.approx(32.0 + 10.0)
  assert 'graded quality change (%)' in compare_runs.markdown(result)


@pytest.mark.slow
def test_cli_writes_files_and_refuses_other_differences(tmp_path):
  a = make_run(tmp_path, 'a', 0, 0.36)
  b = make_run(tmp_path, 'b', 1, 0.35, 'reproducibility')
  c = make_run(tmp_path, 'c', 0, 0.35, lr=1e-3)
  script = ROOT / 'experiments' / 'compare_runs.py'
  ok = subprocess.run([sys.executable, str(script), str(a), str(b),
                       f'--output={tmp_path / "out" / "cmp"}'], capture_output=True, text=True,
                      timeout=300)
  assert ok.returncode == 0, ok.stderr
  for suffix in ('.md', '.json', '.png'):
    assert (tmp_path / 'out' / f'cmp{suffix}').exists()
  assert json.loads((tmp_path / 'out' / 'cmp.json').read_text())['early_warning']
  bad = subprocess.run([sys.executable, str(script), str(a), str(c)], capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode == 2 and "runs differ in 'lr'" in bad.stderr
  assert 'Traceback' not in bad.stderr


def test_differ_allows_a_monitored_rerun_and_labels_it(tmp_path):
  plain = make_run(tmp_path, 'plain', 0, 0.36)
  monitored = make_run(tmp_path, 'monitored', 0, 0.40, on_goodhart='rollback')
  with pytest.raises(compare_runs.UserError, match="'on_goodhart'"):
    compare_runs.group_runs([plain, monitored])
  groups = compare_runs.group_runs([plain, monitored], differ=['on_goodhart'])
  assert sorted(groups) == ['V1 (threshold, on_goodhart=rollback)', 'V1 (threshold, on_goodhart=warn)']
  with pytest.raises(compare_runs.UserError, match='no such setting'):
    compare_runs.group_runs([plain, monitored], differ=['vibes'])


def test_early_warning_precision_recall_and_lead_time(tmp_path):
  # Quality 0.40 -> 0.36 in round 2 (0.04 down, score up): with one evaluation confirming
  # (the runs have two rounds) a gold event in round 2 of each run; unconfirmed by default.
  early_in_1 = make_run(tmp_path, 'a', 0, 0.36, early=(1,))
  early_late = make_run(tmp_path, 'b', 1, 0.36, early=())
  no_decline = make_run(tmp_path, 'c', 2, 0.41, early=(2,))  # A false alarm.
  groups = compare_runs.group_runs([early_in_1, early_late, no_decline])
  assert compare_runs.early_warning_evaluation(groups, 0.04)['runs_with_gold_alarm'] == 0
  result = compare_runs.early_warning_evaluation(groups, 0.04, confirm=1)
  assert result['early_alarms'] == 2 and result['precision'] == 0.5
  assert result['runs_with_gold_alarm'] == 2 and result['recall'] == 0.5
  assert result['lead_time_rounds'] == [1]


def test_results_section_reads_the_numbers_and_replaces_the_block(tmp_path):
  import results_section  # noqa: E402 (experiments/ is on the path above)
  dirs = [make_run(tmp_path, f'v1_{s}', s, q) for s, q in ((0, 0.36), (1, 0.38))]
  groups = compare_runs.group_runs(dirs)
  result = {'groups': compare_runs.table(groups),
            'early_warning': compare_runs.early_warning_evaluation(groups)}
  (tmp_path / 'compare.json').write_text(json.dumps(result))
  readme = tmp_path / 'README.md'
  readme.write_text(f'top\n{results_section.START}\nSTALE\n{results_section.END}\nbottom\n')
  script = ROOT / 'experiments' / 'results_section.py'
  done = subprocess.run([sys.executable, str(script), str(tmp_path / 'compare.json'),
                         f'--readme={readme}'], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  text = readme.read_text()
  assert 'STALE' not in text and text.startswith('top\n') and text.endswith('bottom\n')
  assert '| graded quality change (%) | -7.50 [' in text and '(n=2)' in text  # (-10 - 5) / 2.


def test_refuses_the_same_run_twice_a_corrupt_progress_and_an_unwritable_output(tmp_path):
  a = make_run(tmp_path, 'a', 0, 0.36)
  (tmp_path / 'link').symlink_to(a)
  with pytest.raises(compare_runs.UserError, match='are the same run'):
    compare_runs.check_distinct([a, tmp_path / 'link'])
  (a / history.PROGRESS_FILE).write_text('{"history": {"cycles": [{"cycle": "x"}]}}')
  with pytest.raises(compare_runs.UserError, match='progress.json does not hold a run'):
    compare_runs.group_runs([a])
  with pytest.raises(compare_runs.UserError, match='cannot write /proc/x.md'):
    compare_runs.output_prefix('/proc/x')
  assert compare_runs.output_prefix(str(tmp_path / 'new' / 'cmp')) == tmp_path / 'new' / 'cmp'
