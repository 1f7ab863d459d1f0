"""TensorBoard event files, read back with TensorBoard's own event reader."""

import pytest

from inversion_jax.records import run_dir as run_dir_lib
from inversion_jax.records import summaries

event_accumulator = pytest.importorskip(
    'tensorboard.backend.event_processing.event_accumulator')


def read_events(directory):
  """TensorBoard's accumulator over the run directory: scalars, text (as tensors), hparams."""
  accumulator = event_accumulator.EventAccumulator(
      str(directory), size_guidance={event_accumulator.SCALARS: 0,
                                     event_accumulator.TENSORS: 0})
  return accumulator.Reload()


def scalar_series(accumulator, tag):
  return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def text_at(accumulator, tag, step):
  event = next(e for e in accumulator.Tensors(tag) if e.step == step)
  return event.tensor_proto.string_val[0].decode()


RECORD = {
    'cycle': 1,
    'metrics': {'before/mean_score': 0.25, 'after/mean_score': 0.5, 'train/final_loss': 1.5,
                'base/quality': 0.125, 'train/note': 'text', 'after/strict': None,
                'after/nan': float('nan')},
    'timings': {'generate': 2.0, 'total': 3.0},
    'examples': [{'tool': 'nmap', 'task': 'scan | ports', 'command': 'nmap -sV 10.0.0.5',
                  'reconstruction': 'x', 'rating': 7, 'score': 0.61234, 'kept': True}],
}


def test_rounds_settings_and_examples_read_back(tmp_path):
  run_dir = run_dir_lib.RunDir(tmp_path, is_main=True)
  run_dir.log_config({'lr': 2e-4, 'name': 'demo', 'weights': (0.2, 0.3, 0.5), 'top_k': None})
  run_dir.log_round(RECORD)
  run_dir.log_round(RECORD | {'cycle': 2, 'metrics': {'after/mean_score': 0.75}})
  run_dir.close()
  events = read_events(tmp_path)
  assert scalar_series(events, 'after/mean_score') == [(1, 0.5), (2, 0.75)]
  assert scalar_series(events, 'before/mean_score') == [(1, 0.25)]
  assert scalar_series(events, 'base/quality') == [(0, 0.125)]  # The base model: round 0.
  assert scalar_series(events, 'time/generate') == [(1, 2.0), (2, 2.0)]
  assert not {'train/note', 'after/strict', 'after/nan'} & set(events.Tags()['scalars'])
  table = text_at(events, 'examples/text_summary', 1)
  assert 'nmap -sV 10.0.0.5' in table and 'scan \\| ports' in table and '0.612' in table
  assert '"lr": 0.0002' in text_at(events, 'config/text_summary', 0)
  hparams = events.PluginTagToContent('hparams')
  assert b'demo' in hparams['_hparams_/session_start_info']
  assert b'after/mean_score' in hparams['_hparams_/experiment']


def test_only_process_zero_and_only_when_asked(tmp_path):
  for directory, kwargs in [(tmp_path / 'other', dict(is_main=False)),
                            (tmp_path / 'off', dict(is_main=True, tensorboard=False))]:
    directory.mkdir()
    run_dir = run_dir_lib.RunDir(directory, **kwargs)
    run_dir.log_config({'lr': 1.0})
    run_dir.log_round(RECORD)
    run_dir.close()
    assert not list(directory.iterdir())


def test_scalars_keep_finite_numbers():
  assert summaries.scalars(RECORD) == {
      'before/mean_score': 0.25, 'after/mean_score': 0.5, 'train/final_loss': 1.5,
      'base/quality': 0.125, 'time/generate': 2.0, 'time/total': 3.0}
