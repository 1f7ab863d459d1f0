"""Tests for the run's JSON record: atomic writes, progress/results files, summary."""

import dataclasses
import errno
import json
import os

import numpy as np
import pytest

from inversion_jax.errors import UserError
from inversion_jax.records import files
from inversion_jax.records import console
from inversion_jax.records import history


def _record(cycle, before, after, acc_before, acc_after, loss, timings, tokens, quality=None):
  metrics = {'before/mean_score': before, 'before/acceptance_rate': acc_before,
             'before/num_candidates': 150, 'after/mean_score': after,
             'after/acceptance_rate': acc_after, 'after/num_candidates': 150,
             'before/tokens_generated': tokens / 2, 'after/tokens_generated': tokens / 2,
             'train/num_examples': 0 if loss is None else 12}
  if loss is not None:
    metrics['train/final_loss'] = loss
  if quality is not None:
    metrics |= {'heldout/quality': quality[1], 'heldout/strict': quality[1] / 10,
                'heldout/num_graded': 150}
    if cycle == 1:
      metrics |= {'base/quality': quality[0], 'base/strict': quality[0] / 10}
  return {
      'cycle': cycle,
      'metrics': metrics,
      'loss_curve': [] if loss is None else [loss + 1, loss],
      'train_skipped_reason': 'no examples kept' if loss is None else None,
      'timings': timings,
      'examples': [{'task': 'scan', 'command': 'nmap -sV 10.0.0.5', 'score': 0.7}],
  }


RECORDS = [
    _record(1, 0.40, 0.45, 0.50, 0.60, None, {'generate': 10.0, 'train': 2.0}, 1000),
    _record(2, 0.46, 0.50, 0.60, 0.75, 5.5, {'generate': 8.0, 'train': 4.0, 'total': 15.0},
            1500),
    _record(3, 0.50, 0.60, 0.70, 0.90, 4.4, {'generate': 5.0, 'train': 1.0}, 500),
]


def _history():
  run = history.RunHistory(config={'tasks': 50, 'tools': ('nmap',)}, seed=3)
  for record in RECORDS:
    run.add_round(record)
  return run


def test_summary_numbers_from_hand_made_records():
  summary = history.summarize(_history().rounds)
  assert summary['cycles_completed'] == 3
  assert summary['first_before_mean_score'] == 0.40
  assert summary['last_after_mean_score'] == 0.60
  assert summary['score_relative_change_pct'] == pytest.approx(50.0)  # (0.6-0.4)/0.4.
  assert summary['first_before_acceptance'] == 0.50
  assert summary['last_after_acceptance'] == 0.90
  assert summary['first_train_loss'] == 5.5  # Round 1 skipped training.
  assert summary['last_train_loss'] == 4.4
  assert summary['total_tokens_generated'] == 3000
  assert summary['total_seconds'] == pytest.approx(12.0 + 15.0 + 6.0)  # 'total' wins.


def test_progress_and_results_files(tmp_path):
  run = _history()
  run.save_progress(tmp_path)
  run.save_results(tmp_path)
  progress = json.loads((tmp_path / 'progress.json').read_text())
  assert progress['cycles_completed'] == 3 and progress['seed'] == 3
  assert progress['config'] == {'tasks': 50, 'tools': ['nmap']}
  assert [r['cycle'] for r in history.rounds_of(progress)] == [1, 2, 3]
  results = json.loads((tmp_path / 'self_improvement_results.json').read_text())
  assert results['summary']['total_tokens_generated'] == 3000
  assert results['history'] == progress['history']
  # The original's names: progress.json and the results file (= its `history` block).
  assert progress['last_completed_cycle'] == 3 and 'timestamp' in progress
  assert set(progress['history']) == {'cycles', 'total_generated', 'total_accepted', 'config'}
  assert results['cycles'] == progress['history']['cycles']
  assert results['config']['tasks'] == 50 and results['run_config'] == progress['config']


def test_rounds_of_reads_the_older_shape():
  assert history.rounds_of({'history': [{'cycle': 1}]}) == [{'cycle': 1}]
  assert history.rounds_of({'history': {'cycles': [{'cycle': 2}]}}) == [{'cycle': 2}]


def test_progress_round_trips(tmp_path):
  path = _history().save_progress(tmp_path)
  progress = history.read_progress(path)
  assert progress['seed'] == 3 and history.rounds_of(progress) == _history().rounds


def test_missing_or_broken_progress_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='does not exist.*--resume'):
    history.read_progress(tmp_path / 'progress.json')
  (tmp_path / 'progress.json').write_text('{"config": ')
  with pytest.raises(UserError, match='progress.json is not valid JSON.*--resume'):
    history.read_progress(tmp_path / 'progress.json')



def test_written_files_honour_the_umask(tmp_path):
  old = os.umask(0o027)
  try:
    path = files.write_json_atomic(tmp_path / 'a.json', {'v': 1})
  finally:
    os.umask(old)
  assert path.stat().st_mode & 0o777 == 0o640
  path = files.write_json_atomic(tmp_path / 'b.json', {'v': 1})
  assert path.stat().st_mode & 0o777 == 0o666 & ~old


def test_output_file_is_checked_before_the_work(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    files.check_output_file(tmp_path / 'missing' / 'x.json')
  with pytest.raises(UserError, match='is a directory'):
    files.check_output_file(tmp_path)
  assert files.check_output_file(tmp_path / 'x.json') == tmp_path / 'x.json'


@dataclasses.dataclass
class _Point:
  x: int
  y: tuple


def test_write_json_atomic_serialises_numpy_and_dataclasses(tmp_path):
  path = files.write_json_atomic(tmp_path / 'a.json', {
      'f': np.float32(0.25), 'i': np.int64(7), 'arr': np.arange(3), 'nan': float('nan'),
      'b': np.bool_(True), 'point': _Point(1, (2, 3))})
  assert json.loads(path.read_text()) == {
      'f': 0.25, 'i': 7, 'arr': [0, 1, 2], 'nan': None, 'b': True,
      'point': {'x': 1, 'y': [2, 3]}}


def test_write_json_atomic_keeps_old_file_when_replace_fails(tmp_path, monkeypatch):
  path = tmp_path / 'progress.json'
  files.write_json_atomic(path, {'v': 1})

  def failing_replace(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, 'replace', failing_replace)
  with pytest.raises(UserError, match=r'cannot write .*progress.json \(No space left on device\); '
                     'the disk is full'):
    files.write_json_atomic(path, {'v': 2})
  assert json.loads(path.read_text()) == {'v': 1}
  assert os.listdir(tmp_path) == ['progress.json']  # No temp file left behind.


def test_save_figure_atomic_keeps_the_old_plot_when_replace_fails(tmp_path, monkeypatch):
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  path = tmp_path / 'goodhart.png'
  files.save_figure_atomic(plt.figure(), path, dpi=20)
  old = path.read_bytes()

  def failing_replace(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, 'replace', failing_replace)
  figure = plt.figure()
  with pytest.raises(UserError, match=r'cannot write .*goodhart.png \(No space left'):
    files.save_figure_atomic(figure, path, dpi=20)
  assert path.read_bytes() == old and os.listdir(tmp_path) == ['goodhart.png']
  assert not plt.fignum_exists(figure.number)  # Closed even when the save failed.


def test_format_round_table_and_summary():
  table = console.format_round_table(RECORDS[1])
  lines = table.splitlines()
  assert lines[0].startswith('round 2')
  assert '0.460' in lines[1] and '0.500' in lines[1] and '+0.040' in lines[1]
  assert '60.0%' in lines[2] and '75.0%' in lines[2] and '+15.0%' in lines[2]
  assert '5.5000 on 12 examples' in table and 'total 15.0s' in table
  assert 'skipped (no examples kept)' in console.format_round_table(RECORDS[0])
  summary = console.format_summary(_history())
  assert '0.400 -> 0.600 (+50.0%)' in summary and '50.0% -> 90.0%' in summary
  assert '5.500 -> 4.400' in summary and '3,000' in summary and '33.0s' in summary
  assert console.format_summary(history.RunHistory({}, 0)) == 'no rounds completed'


def test_heldout_quality_summary_and_goodhart_gap():
  rounds = [_record(1, 0.40, 0.45, 0.5, 0.6, 5.0, {}, 10, quality=(0.50, 0.48)),
            _record(2, 0.46, 0.60, 0.6, 0.8, 4.0, {}, 10, quality=(None, 0.45))]
  summary = history.summarize([files.jsonable(r) for r in rounds])
  assert summary['heldout_quality_first'] == 0.50 and summary['heldout_quality_first_round'] == 0
  assert summary['heldout_quality_last'] == 0.45 and summary['heldout_quality_last_round'] == 2
  assert summary['quality_relative_change_pct'] == pytest.approx(-10.0)
  # Score +50 % (0.40 -> 0.60), quality -10 %: the gap is 0.6.
  assert summary['goodhart_gap'] == pytest.approx(0.5 + 0.1)
  table = console.format_round_table(rounds[0])
  assert 'held-out (150 tasks, greedy)' in table and '0.500' in table and '-0.020' in table
  run = history.RunHistory({}, 0)
  for record in rounds:
    run.add_round(record)
  text = console.format_summary(run)
  assert 'real quality      0.500 (round 0) -> 0.450 (round 2) (-10.0%)' in text
  assert 'goodhart gap      +60.0 points' in text


def test_rows_files_are_jsonl_and_replaced(tmp_path):
  path = files.write_rows(tmp_path, 3, 'before', [{'a': np.float32(0.5)}, {'a': 2}])
  assert path == tmp_path / 'rows' / 'round_003_before.jsonl'
  assert files.read_rows(path) == [{'a': 0.5}, {'a': 2}]
  files.write_rows(tmp_path, 3, 'before', [{'a': 3}])
  assert files.read_rows(path) == [{'a': 3}]
