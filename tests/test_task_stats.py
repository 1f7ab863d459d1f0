"""Per (task, seed) statistics: the bootstrap on known numbers, pairing, and compare_runs
reading held-out rows."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from inversion_jax.errors import UserError
from inversion_jax.quality import task_stats
from inversion_jax.records import files
from inversion_jax.records import history

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'experiments'))
import compare_runs  # noqa: E402


def test_constant_values_give_a_zero_width_interval():
  for seeds in (1, 3):
    interval = task_stats.bootstrap(np.full((12, seeds), 0.25), resamples=200)
    assert interval.mean == interval.low == interval.high == 0.25
    assert (interval.tasks, interval.seeds) == (12, seeds)


def test_known_mean_and_an_interval_around_it():
  values = np.tile([0.0, 1.0], 50)  # Mean 0.5, SE 0.05: the interval is about +-0.1.
  interval = task_stats.bootstrap(values, resamples=1000)
  assert interval.mean == 0.5
  assert 0.38 < interval.low < 0.45 and 0.55 < interval.high < 0.62


def test_seeds_are_resampled_too():
  # Every task the same, seeds far apart: only resampling seeds shows the spread.
  values = np.tile([0.0, 1.0, 0.5], (20, 1))
  two_way = task_stats.bootstrap(values, resamples=1000)
  assert two_way.mean == pytest.approx(0.5)
  assert two_way.low < 0.3 and two_way.high > 0.7
  tasks_only = task_stats.bootstrap(values.mean(axis=1), resamples=200)
  assert tasks_only.low == tasks_only.high == pytest.approx(0.5)


def test_bootstrap_is_deterministic():
  values = np.random.default_rng(3).normal(size=(30, 2))
  assert task_stats.bootstrap(values, 300) == task_stats.bootstrap(values, 300)


def test_pairing_matches_tasks_and_seeds():
  a = {0: {'t1': 0.1, 't2': 0.5, 't3': 0.9}, 1: {'t1': 0.2, 't2': 0.4, 't3': 0.8}}
  b = {0: {'t1': 0.2, 't2': 0.6, 't3': 1.0, 'only_b': 9.0},
       1: {'t1': 0.3, 't2': 0.5, 't3': 0.9}, 7: {'t1': 5.0}}
  paired = task_stats.paired_difference(a, b, resamples=300)
  interval = paired['interval']
  assert paired['seeds'] == [0, 1] and paired['signs'] == '++'
  assert interval.mean == pytest.approx(0.1) and (interval.tasks, interval.seeds) == (3, 2)
  assert interval.low == pytest.approx(0.1) and interval.high == pytest.approx(0.1)


def test_signs_per_seed_and_no_common_seed():
  a = {0: {'t': 0.5, 'u': 0.5}, 1: {'t': 0.5, 'u': 0.5}}
  b = {0: {'t': 0.7, 'u': 0.6}, 1: {'t': 0.3, 'u': 0.5}}
  paired = task_stats.paired_difference(a, b, resamples=200)
  assert paired['signs'] == '+-'
  assert paired['per_seed'] == pytest.approx([0.15, -0.1])
  with pytest.raises(UserError, match='share no seed'):
    task_stats.paired_difference({0: {'t': 1.0}}, {1: {'t': 1.0}})


def test_matrix_refuses_disjoint_tasks():
  with pytest.raises(UserError, match='share no held-out task'):
    task_stats.matrix({0: {'a': 1.0}, 1: {'b': 1.0}})


def _rows(quality, nlc=None):
  out = []
  for index, q in enumerate(quality):
    row = {'id': f'nmap-{index + 1:03d}', 'tool': 'nmap', 'command': 'nmap -sV 172.31.9.14',
           'verdict': {'ok': q == 1.0, 'quality': q, 'reasons': []}}
    if nlc is not None:
      row['nlc2cmd'] = nlc[index]
    out.append(row)
  return out


def make_run(root, name, seed, base, last, filter_name='threshold', last_round=2, nlc=True):
  directory = root / name
  config = {'name': name, 'seed': seed, 'filter': filter_name, 'threshold': 0.2}
  rounds = [{'cycle': c, 'metrics': {'before/mean_score': 0.25, 'after/mean_score': 0.3,
                                     'heldout/quality': float(np.mean(last))}}
            for c in range(1, last_round + 1)]
  rounds[0]['metrics']['base/quality'] = float(np.mean(base))
  directory.mkdir()
  files.write_json_atomic(directory / history.PROGRESS_FILE,
                            {'config': config, 'seed': seed, 'history': rounds})
  files.write_rows(directory, 0, 'heldout', _rows(base, base if nlc else None))
  files.write_rows(directory, 1, 'heldout', _rows([0.0] * len(base)))
  files.write_rows(directory, last_round, 'heldout', _rows(last, last if nlc else None))
  return directory


def test_run_changes_use_round_zero_and_the_last_round(tmp_path):
  run = make_run(tmp_path, 'r', 0, [0.5, 0.5, 1.0], [0.75, 0.25, 1.0], last_round=3)
  assert task_stats.heldout_rounds(run) == [0, 1, 3]
  changes = task_stats.run_changes(run, ['quality', 'strict', 'nlc2cmd'])
  assert changes['quality']['round'] == 3
  assert changes['quality']['change'] == {'nmap-001': 0.25, 'nmap-002': -0.25, 'nmap-003': 0.0}
  assert changes['strict']['base'] == {'nmap-001': 0.0, 'nmap-002': 0.0, 'nmap-003': 1.0}


def test_run_changes_average_the_last_rounds_per_task(tmp_path):
  run = make_run(tmp_path, 'r', 0, [0.5, 0.5, 1.0], [0.75, 0.25, 1.0], last_round=3)
  changes = task_stats.run_changes(run, ['quality'], last_rounds=2)
  assert changes['quality']['rounds'] == [1, 3]  # Round 1's rows are all 0.
  assert changes['quality']['last'] == {'nmap-001': 0.375, 'nmap-002': 0.125, 'nmap-003': 0.5}
  assert changes['quality']['change'] == {'nmap-001': -0.125, 'nmap-002': -0.375,
                                          'nmap-003': -0.5}
  with pytest.raises(UserError, match='last_rounds'):
    task_stats.run_changes(run, ['quality'], last_rounds=0)


def test_nlc2cmd_is_recomputed_for_rows_that_predate_it(tmp_path):
  run = make_run(tmp_path, 'old', 0, [0.5, 0.5], [0.5, 0.5], nlc=False)
  assert 'nlc2cmd' not in task_stats.run_changes(run, ['quality', 'nlc2cmd'])
  references = {'nmap-001': ['nmap -sV 172.31.9.14'], 'nmap-002': ['nmap -O 172.31.9.14']}
  changes = task_stats.run_changes(run, ['nlc2cmd'], references)
  assert changes['nlc2cmd']['base'] == {'nmap-001': 1.0, 'nmap-002': -0.5}


def test_compare_runs_task_table_pairs_the_arms(tmp_path):
  base = [0.2, 0.4, 0.6, 0.8]
  dirs = [make_run(tmp_path, f'v1_{s}', s, base, [b + 0.1 for b in base]) for s in (0, 1)]
  dirs += [make_run(tmp_path, f'v2_{s}', s, base, [b - 0.1 for b in base], 'reproducibility')
           for s in (0, 1)]
  result = compare_runs.task_table(compare_runs.group_runs(dirs), resamples=200)
  v1 = result['arms']['V1 (threshold)']['quality']
  assert v1['change']['mean'] == pytest.approx(0.1) and v1['change']['seeds'] == 2
  assert v1['base']['mean'] == pytest.approx(0.5) and v1['base']['low'] < 0.5
  (name, measures), = result['differences'].items()
  assert name.endswith(' - V1 (threshold)') and name.startswith('V2')
  diff = measures['quality']
  assert diff['interval']['mean'] == pytest.approx(-0.2) and diff['signs'] == '--'
  assert diff['interval']['high'] == pytest.approx(-0.2)
  assert 'nlc2cmd' in measures
  text = task_stats.markdown(result)
  assert 'NLC2CMD score' in text and '4 x 2' in text


@pytest.mark.slow
def test_compare_runs_refuses_a_run_given_twice(tmp_path):
  run = make_run(tmp_path, 'a', 0, [0.5], [0.5])
  with pytest.raises(UserError, match='given twice'):
    compare_runs.group_runs([run, tmp_path / '.' / 'a'])
  copy = tmp_path / 'copy'
  copy.mkdir()
  (copy / history.PROGRESS_FILE).write_bytes((run / history.PROGRESS_FILE).read_bytes())
  with pytest.raises(UserError, match='seed 0 appears twice'):
    compare_runs.group_runs([run, copy])
  script = ROOT / 'experiments' / 'compare_runs.py'
  done = subprocess.run([sys.executable, str(script), str(run), str(run),
                         f'--output={tmp_path / "cmp"}'], capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 2 and 'the same run' in done.stderr  # check_distinct, before grouping
  assert 'Traceback' not in done.stderr and len(done.stderr.strip().splitlines()) == 1
