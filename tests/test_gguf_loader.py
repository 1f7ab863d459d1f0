"""GGUF loading: tiny files written here, plus parity with transformers on the real model."""


import gguf
import numpy as np
import pytest

import tiny_checkpoints as tc
from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import gguf_loader, names

Q = gguf.GGMLQuantizationType


def _expected_ours(weights):
  """HF-layout weights renamed and transposed the way the loader should return them."""
  out = {}
  for hf_name, array in weights.items():
    entry, _ = names.lookup(hf_name, 'hf')
    out[names.rename(hf_name, 'hf', 'ours')] = names.to_ours(array, entry)
  return out


def test_permutation_undo_inverts_llama_cpp():
  weight = np.arange(4 * 16 * 3, dtype=np.float32).reshape(4 * 16, 3)
  permuted = tc.llama_cpp_permute(weight, 4)
  assert not np.array_equal(permuted, weight)  # Otherwise this test proves nothing.
  np.testing.assert_array_equal(gguf_loader.unpermute_rope_rows(permuted, 4), weight)


def test_f32_round_trip_recovers_hf_weights_and_config(tmp_path):
  config = ModelConfig.tiny()
  weights = tc.random_hf_weights(config)
  tc.write_gguf(tmp_path / 'm.gguf', config, weights)
  loaded_config, params = gguf_loader.load_gguf(tmp_path / 'm.gguf')
  assert loaded_config == config
  expected = _expected_ours(weights)
  assert params.keys() == expected.keys()
  for name, array in expected.items():
    assert params[name].dtype == np.float32
    np.testing.assert_array_equal(params[name], array, err_msg=name)


def test_quantized_and_tied(tmp_path):
  config = tc.QUANT_CONFIG.replace(tie_embeddings=True)
  weights = tc.random_hf_weights(config)
  qtypes = {'token_embd.weight': Q.Q8_0, 'blk.0.attn_q.weight': Q.Q8_0,
            'blk.0.attn_k.weight': Q.Q4_0, 'blk.1.ffn_down.weight': Q.F16,
            'blk.1.attn_output.weight': Q.BF16}
  tc.write_gguf(tmp_path / 'q.gguf', config, weights, qtypes=qtypes)
  loaded_config, params = gguf_loader.load_gguf(tmp_path / 'q.gguf')
  assert loaded_config.tie_embeddings and 'lm_head.kernel' not in params
  expected = _expected_ours(weights)
  tolerances = {'embed.embedding': 0.03, 'layers.0.attn.q_proj.kernel': 0.03,
                'layers.0.attn.k_proj.kernel': 0.6, 'layers.1.mlp.down_proj.kernel': 2e-3,
                'layers.1.attn.o_proj.kernel': 0.03}
  for name, array in expected.items():
    np.testing.assert_allclose(params[name], array, rtol=0, atol=tolerances.get(name, 0),
                               err_msg=name)
  # Quantization error is small noise, not a shuffled layout.
  q = np.asarray(params['layers.0.attn.q_proj.kernel'])
  assert np.corrcoef(q.ravel(), expected['layers.0.attn.q_proj.kernel'].ravel())[0, 1] > 0.999


@pytest.mark.parametrize('content', [b'', b'not a gguf file at all' * 10, b'GGUF\x03\x00'])
def test_corrupt_files_raise_user_error(tmp_path, content):
  (tmp_path / 'bad.gguf').write_bytes(content)
  with pytest.raises(UserError, match='not a readable GGUF'):
    gguf_loader.load_gguf(tmp_path / 'bad.gguf')


def test_truncated_file_raises_user_error(tmp_path):
  config = ModelConfig.tiny()
  tc.write_gguf(tmp_path / 'm.gguf', config, tc.random_hf_weights(config))
  data = (tmp_path / 'm.gguf').read_bytes()
  (tmp_path / 'm.gguf').write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match='truncated or corrupt'):
    gguf_loader.load_gguf(tmp_path / 'm.gguf')


def test_missing_path_and_directory(tmp_path):
  with pytest.raises(UserError, match='does not exist'):
    gguf_loader.load_gguf(tmp_path / 'nope.gguf')
  with pytest.raises(UserError, match='not a file'):
    gguf_loader.load_gguf(tmp_path)


def test_unsupported_architecture_is_named(tmp_path):
  config = ModelConfig.tiny()
  tc.write_gguf(tmp_path / 'm.gguf', config, tc.random_hf_weights(config), arch='qwen2')
  with pytest.raises(UserError, match="'qwen2' is not supported"):
    gguf_loader.load_gguf(tmp_path / 'm.gguf')


def test_unsupported_quantization_is_named(tmp_path):
  config = tc.QUANT_CONFIG
  weights = tc.random_hf_weights(config)
  del weights['model.layers.0.mlp.up_proj.weight']
  block, size = gguf.GGML_QUANT_SIZES[Q.Q8_1]  # gguf can write Q8_1 but not dequantize it.
  raw = np.zeros((config.hidden_dim, config.embed_dim // block * size), np.uint8)
  tc.write_gguf(tmp_path / 'm.gguf', config, weights, raw={'blk.0.ffn_up.weight': (raw, Q.Q8_1)})
  with pytest.raises(UserError, match='blk.0.ffn_up.weight uses GGUF type Q8_1'):
    gguf_loader.load_gguf(tmp_path / 'm.gguf')


def test_missing_metadata_and_mismatched_tensors(tmp_path):
  config = ModelConfig.tiny()
  weights = tc.random_hf_weights(config)
  tc.write_gguf(tmp_path / 'a.gguf', config, weights, skip_keys=('block_count',))
  with pytest.raises(UserError, match='block_count'):
    gguf_loader.load_gguf(tmp_path / 'a.gguf')
  bigger = config.replace(num_layers=3)
  tc.write_gguf(tmp_path / 'b.gguf', bigger, weights)
  with pytest.raises(UserError, match='lacks tensors'):
    gguf_loader.load_gguf(tmp_path / 'b.gguf')


def test_smollm2_config_matches_preset(smollm2_loaded):
  config, params = smollm2_loaded
  assert config == ModelConfig.smollm2_135m()
  assert params.keys() == names.expected_shapes(config).keys()


@pytest.mark.slow
def test_smollm2_params_match_transformers_gguf_loading(smollm2_loaded, smollm2_transformers):
  """Same file through transformers' own GGUF path (dequantize + reverse_permute)."""
  _, params = smollm2_loaded
  model = smollm2_transformers
  state = {k: v for k, v in model.state_dict().items() if k != 'lm_head.weight'}  # Tied.
  assert {names.rename(k, 'hf', 'ours') for k in state} == set(params)
  for hf_name, tensor in state.items():
    entry, _ = names.lookup(hf_name, 'hf')
    np.testing.assert_allclose(params[names.rename(hf_name, 'hf', 'ours')],
                               names.to_ours(tensor.float().numpy(), entry), rtol=1e-5,
                               atol=1e-7, err_msg=hf_name)
