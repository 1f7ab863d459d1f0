"""HF checkpoint loading: tiny safetensors written here, and transformers' own save format."""

import json

import ml_dtypes
import numpy as np
import pytest

import tiny_checkpoints as tc
from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import hf_loader, names


def _assert_matches_hf(params, weights, atol=0.0):
  assert len(params) == len(weights)
  for hf_name, array in weights.items():
    entry, _ = names.lookup(hf_name, 'hf')
    ours = params[names.rename(hf_name, 'hf', 'ours')]
    assert ours.dtype == np.asarray(array).dtype  # The checkpoint's own: cast when placed.
    np.testing.assert_allclose(ours, np.asarray(array, np.float32).T if entry.transpose else
                               array, rtol=0, atol=atol, err_msg=hf_name)


@pytest.mark.parametrize('shards', [1, 3])
def test_single_and_sharded_round_trip(tmp_path, shards):
  config = ModelConfig.tiny()
  weights = tc.random_hf_weights(config)
  tc.write_hf_dir(tmp_path, config, weights, shards=shards)
  loaded, params = hf_loader.load_hf_dir(tmp_path)
  assert loaded == config
  _assert_matches_hf(params, weights)


def test_bf16_tied_and_config_variants(tmp_path):
  """bf16 storage, a saved copy of the tied head, transformers-5 `rope_parameters`, head_dim."""
  config = ModelConfig.tiny(tie_embeddings=True, head_dim=12, rope_theta=1e6)
  weights = {k: v.astype(ml_dtypes.bfloat16) for k, v in tc.random_hf_weights(config).items()}
  head = weights['model.embed_tokens.weight'].copy()
  tc.write_hf_dir(tmp_path, config, weights | {'lm_head.weight': head},
                  rope_theta=None, rope_parameters={'rope_theta': 1e6, 'rope_type': 'default'},
                  head_dim=12, eos_token_id=2)
  (tmp_path / 'generation_config.json').write_text(json.dumps({'eos_token_id': [2, 0]}))
  loaded, params = hf_loader.load_hf_dir(tmp_path)
  assert loaded == config.replace(eos_token_ids=(2, 0))
  _assert_matches_hf(params, weights)


def test_transformers_checkpoint_loads(tmp_path):
  """A checkpoint as transformers itself writes it (sharded), compared with its state_dict."""
  torch = pytest.importorskip('torch')
  transformers = pytest.importorskip('transformers')
  config = ModelConfig.tiny()
  hf_config = transformers.LlamaConfig(**{
      k: v for k, v in tc.hf_config_json(config).items() if k not in ('architectures',)})
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(hf_config)
  model.save_pretrained(tmp_path, max_shard_size='100KB')
  assert (tmp_path / 'model.safetensors.index.json').is_file()
  loaded, params = hf_loader.load_hf_dir(tmp_path)
  assert loaded == config
  _assert_matches_hf(params, {k: v.numpy() for k, v in model.state_dict().items()})


def _good_dir(tmp_path, **overrides):
  config = ModelConfig.tiny()
  tc.write_hf_dir(tmp_path, config, tc.random_hf_weights(config), **overrides)
  return tmp_path


@pytest.mark.parametrize('break_it, message', [
    (lambda d: (d / 'config.json').unlink(), 'has no config.json'),
    (lambda d: (d / 'model.safetensors').unlink(), 'has no model.safetensors'),
    (lambda d: (d / 'model.safetensors').write_bytes(b'garbage'), 'cannot be read'),
    (lambda d: (d / 'config.json').write_text('{'), 'not valid JSON'),
    (lambda d: _rewrite_config(d, architectures=['GPT2LMHeadModel'], model_type='gpt2'),
     'GPT2LMHeadModel'),
    (lambda d: _rewrite_config(d, attention_bias=True), 'biases'),
    (lambda d: _rewrite_config(d, num_hidden_layers=3), 'lacks tensors'),
    (lambda d: _rewrite_config(d, hidden_size=None), 'bad field'),
])
def test_bad_checkpoints_raise_user_error(tmp_path, break_it, message):
  directory = _good_dir(tmp_path)
  break_it(directory)
  with pytest.raises(UserError, match=message):
    hf_loader.load_hf_dir(directory)


def _rewrite_config(directory, **changes):
  path = directory / 'config.json'
  path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_missing_shard_and_unknown_tensor(tmp_path):
  config = ModelConfig.tiny()
  weights = tc.random_hf_weights(config)
  tc.write_hf_dir(tmp_path / 'a', config, weights, shards=2)
  next((tmp_path / 'a').glob('model-00002*')).unlink()
  with pytest.raises(UserError, match='lacks weight shards'):
    hf_loader.load_hf_dir(tmp_path / 'a')
  extra = weights | {'model.layers.0.self_attn.q_norm.weight': np.ones(8, np.float32)}
  tc.write_hf_dir(tmp_path / 'b', config, extra)
  with pytest.raises(UserError, match='q_norm'):
    hf_loader.load_hf_dir(tmp_path / 'b')


def test_not_a_directory(tmp_path):
  with pytest.raises(UserError, match='not a directory'):
    hf_loader.load_hf_dir(tmp_path / 'missing')


def test_resolve_hf_local_and_offline(tmp_path, monkeypatch):
  assert hf_loader.resolve_hf(tmp_path) == tmp_path
  with pytest.raises(UserError, match='neither a local directory nor'):
    hf_loader.resolve_hf('not a hub id!')
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf_home'))
  monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf_home' / 'hub'))
  with pytest.raises(UserError, match='offline'):
    hf_loader.resolve_hf('some-org/some-model')
