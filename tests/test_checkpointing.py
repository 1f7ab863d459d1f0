"""Tests for per-round Orbax checkpoints and the --resume configuration guard."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from inversion_jax.errors import UserError
from inversion_jax.train import checkpointing

CONFIG = {'lr': 0.0002, 'tasks': 50, 'cycles': 3, 'tools': ('nmap', 'hydra'), 'seed': 0}


def _lora(scale=1.0):
  return {'layers': {'0': {'a': np.full((3, 2), scale, np.float32),
                           'b': np.arange(4, dtype=np.float32).reshape(2, 2) * scale}}}


def _opt_state(lora):
  """An AdamW state that has taken one step, so mu/nu/count are not all zero."""
  optimizer = optax.adamw(1e-3)
  state = optimizer.init(lora)
  _, state = optimizer.update(jax.tree.map(np.ones_like, lora), state, lora)
  return state


def _save_rounds(directory, rounds):
  with checkpointing.RoundCheckpointer(directory, CONFIG) as ckpt:
    for r in rounds:
      lora = _lora(float(r))
      ckpt.save(r, lora, _opt_state(lora), jax.random.key_data(jax.random.key(r)),
                {'round': r, 'metrics': {'score': np.float32(0.5 + r / 10), 'n': r,
                                         'curve': [1.0, 0.5], 'note': 'ok'}})


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def test_round_trip_restores_every_round(tmp_path):
  _save_rounds(tmp_path, [1, 2, 3])
  with checkpointing.RoundCheckpointer(tmp_path, CONFIG) as ckpt:
    assert ckpt.all_rounds() == [1, 2, 3] and ckpt.latest_round() == 3
    like = _lora()
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _opt_state(like))
    for r in (1, 3):
      lora, opt_state, rng, meta = ckpt.restore(r, like, shapes)
      _assert_trees_equal(lora, _lora(float(r)))
      _assert_trees_equal(opt_state, _opt_state(_lora(float(r))))
      assert rng.dtype == np.uint32
      np.testing.assert_array_equal(rng, jax.random.key_data(jax.random.key(r)))
      assert meta == {'round': r, 'metrics': {'score': pytest.approx(0.5 + r / 10), 'n': r,
                                              'curve': [1.0, 0.5], 'note': 'ok'}}


def test_run_config_is_written_when_round_1_commits(tmp_path):
  with checkpointing.RoundCheckpointer(tmp_path / 'out', CONFIG) as ckpt:
    assert ckpt.latest_round() is None and ckpt.all_rounds() == []
  assert not (tmp_path / 'out' / 'run_config.json').exists()  # A failed start leaves none.
  _save_rounds(tmp_path / 'out', [1])
  stored = json.loads((tmp_path / 'out' / 'run_config.json').read_text())
  assert stored['tools'] == ['nmap', 'hydra'] and stored['lr'] == 0.0002


def test_a_stale_config_without_rounds_does_not_hold_a_resume(tmp_path):
  (tmp_path / 'run_config.json').write_text(json.dumps(CONFIG | {'lr': 9.0}))
  with checkpointing.RoundCheckpointer(tmp_path, CONFIG) as ckpt:
    ckpt.check_resume(CONFIG)  # No round committed: the stale file is not a run's config.


def test_interrupted_save_is_ignored_on_reopen(tmp_path):
  _save_rounds(tmp_path, [1, 2])
  steps = tmp_path / 'checkpoints'
  # An orbax temp dir from a save killed mid-write, and a step that lost its marker.
  tmp_step = steps / '3.orbax-checkpoint-tmp-1712345678'
  (tmp_step / 'lora').mkdir(parents=True)
  (tmp_step / 'lora' / '_METADATA').write_text('{"partial')
  os.remove(steps / '2' / 'commit_success.txt')
  with checkpointing.RoundCheckpointer(tmp_path, CONFIG) as ckpt:
    assert ckpt.latest_round() == 1 and ckpt.all_rounds() == [1]
    assert not tmp_step.exists()
    assert (tmp_path / 'incomplete_checkpoints' / '2').is_dir()
    lora = _lora(2.0)  # The round can be redone after the sweep.
    ckpt.save(2, lora, _opt_state(lora), jax.random.key(7), {'round': 2})  # Typed key.
    assert ckpt.latest_round() == 2
    _, _, rng, _ = ckpt.restore(2, lora, _opt_state(lora))
    np.testing.assert_array_equal(rng, jax.random.key_data(jax.random.key(7)))


# TensorStore may finish a failed read after Orbax's event loop closed: harmless noise.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('damage', ['truncate', 'delete'])
def test_corrupt_checkpoint_is_a_user_error(tmp_path, damage):
  _save_rounds(tmp_path, [1])
  data_files = [p for p in (tmp_path / 'checkpoints' / '1' / 'lora').rglob('*')
                if p.is_file() and p.parent.name == 'd']
  assert data_files
  for path in data_files:
    if damage == 'truncate':
      with open(path, 'r+b') as f:
        f.truncate(7)
    else:
      path.unlink()
  with checkpointing.RoundCheckpointer(tmp_path, CONFIG) as ckpt:
    like = _lora()
    with pytest.raises(UserError, match=r'round 1 .*corrupt.*delete') as info:
      ckpt.restore(1, like, _opt_state(like))
  assert str(tmp_path / 'checkpoints' / '1') in str(info.value)


def test_restore_of_missing_round_is_a_user_error(tmp_path):
  with checkpointing.RoundCheckpointer(tmp_path, CONFIG) as ckpt:
    with pytest.raises(UserError, match='no checkpoint for round 4'):
      ckpt.restore(4, _lora(), _opt_state(_lora()))


def test_check_resume_names_every_changed_setting(tmp_path):
  _save_rounds(tmp_path, [1])
  ckpt = checkpointing.RoundCheckpointer(tmp_path, CONFIG)
  ckpt.check_resume(CONFIG | {'cycles': 10, 'resume': True})  # Allowed to change.
  with pytest.raises(UserError) as info:
    ckpt.check_resume(CONFIG | {'lr': 0.001, 'tasks': 20, 'cycles': 10, 'model': 'tiny'})
  message = str(info.value)
  assert message.startswith('--resume on a run made with a different configuration:')
  assert 'lr 0.0002 -> 0.001' in message and 'tasks 50 -> 20' in message
  assert 'model (unset) -> tiny' in message and 'cycles' not in message
  assert message.endswith('use the same flags or a new --output')
  ckpt.close()


def test_unwritable_output_is_a_user_error(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(UserError, match='cannot write the output directory'):
    checkpointing.RoundCheckpointer(blocker / 'run', CONFIG)
