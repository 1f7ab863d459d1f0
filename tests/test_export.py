"""Adapter export round trips: PEFT and the merged checkpoint in transformers, the GGUF read back.

The run's model is a tiny GGUF that transformers itself loads (its own de-permutation of q/k);
a round's adapters are saved the way a run saves them, then exported and compared with our
forward pass through the same adapters. Tolerance: float32 everywhere, logits agree to 1e-4.
"""

import functools
import json
import pathlib
import subprocess
import sys

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tiny_checkpoints as tc
from inversion_jax.errors import UserError
from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import gguf_loader, registry
from inversion_jax.train import checkpointing, export

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ModelConfig.tiny(vocab_size=266, tie_embeddings=True)
RANK, ALPHA = 4, 8.0
ATOL = 1e-4  # float32 in both frameworks; measured differences are ~1e-6.
TOKENS = np.array([[1, 40, 77, 101, 9, 250, 3, 18, 64, 200, 5, 120]], np.int32)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A run directory with round 1 saved (random non-zero adapters) on a tiny GGUF model."""
  root = tmp_path_factory.mktemp('export')
  weights = tc.random_hf_weights(CONFIG, seed=0)
  weights = {k: 0.2 * v if 'norm' not in k else 1 + 0 * v for k, v in weights.items()}
  model_path = root / 'tiny.gguf'
  tc.write_gguf(model_path, CONFIG, weights)
  source = registry.load_model_source(model_path)
  graphdef, state = model_lib.from_flat_params(source[0], source[1])
  graphdef, state = lora_lib.add_lora(graphdef, state, lora_lib.LoRAConfig(RANK, ALPHA, 0.0))
  graphdef, lora, base = lora_lib.split_lora(graphdef, state)
  rng = np.random.default_rng(1)  # b = 0 at init: give b (and a) values that move the logits.
  lora = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), lora)
  workdir = root / 'runs' / 'r'
  run_config = dict(model=str(model_path), lora_rank=RANK, lora_alpha=ALPHA, lora_dropout=0.05)
  with checkpointing.RoundCheckpointer(workdir, run_config) as checkpointer:
    checkpointer.save(1, lora, {'count': np.zeros(1)}, jax.random.key(0), {'round': 1})
  logits = model_lib.forward(graphdef, (lora, base), jnp.asarray(TOKENS),
                             jnp.arange(TOKENS.shape[1])[None]).logits
  return dict(workdir=workdir, model=model_path, source=source, lora=lora,
              logits=np.asarray(logits), weights=weights)


@pytest.fixture(scope='module')
def hf_base(run):
  """transformers' own load of the run's GGUF (its dequantisation and q/k un-permute)."""
  pytest.importorskip('accelerate')
  transformers = pytest.importorskip('transformers')
  original = gguf.get_tensor_name_map  # Rebuilt per module otherwise (~6 s): memoize.
  gguf.get_tensor_name_map = functools.cache(original)
  try:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(run['model'].parent), gguf_file=run['model'].name, attn_implementation='eager')
  finally:
    gguf.get_tensor_name_map = original
  return model.eval()


def torch_logits(model):
  torch = pytest.importorskip('torch')
  with torch.no_grad():
    return model(torch.tensor(TOKENS, dtype=torch.long)).logits.numpy()


def test_adapters_read_back_as_saved(run):
  adapters = export.round_adapters(run['workdir'], 1)
  saved = nnx.to_pure_dict(run['lora'])
  assert len(adapters) == CONFIG.num_layers * len(lora_lib.TARGETS)
  a, b = adapters['layers.1.attn.k_proj.kernel']
  np.testing.assert_array_equal(a, saved['layers'][1]['attn']['k_proj']['lora']['a'])
  np.testing.assert_array_equal(b, saved['layers'][1]['attn']['k_proj']['lora']['b'])


def test_peft_adapter_applied_by_peft_matches_ours(run, hf_base, tmp_path):
  peft = pytest.importorskip('peft')
  out = export.export_round(run['workdir'], 1, 'peft', tmp_path / 'peft')
  config = json.loads((out / 'adapter_config.json').read_text())
  assert (config['r'], config['lora_alpha'], config['lora_dropout']) == (RANK, ALPHA, 0.05)
  assert config['target_modules'] == sorted(lora_lib.TARGETS)
  base_logits = torch_logits(hf_base)
  assert np.abs(base_logits - run['logits']).max() > 100 * ATOL  # The adapters matter.
  model = peft.PeftModel.from_pretrained(hf_base, str(out)).eval()
  try:
    np.testing.assert_allclose(torch_logits(model), run['logits'], rtol=0, atol=ATOL)
  finally:
    model.unload()  # Gives hf_base back without adapters for the next test.


def test_merged_checkpoint_loads_in_transformers_and_matches_ours(run, tmp_path):
  transformers = pytest.importorskip('transformers')
  out = export.export_round(run['workdir'], 1, 'merged', tmp_path / 'merged',
                            model_source=run['source'])
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(out), attn_implementation='eager').eval()
  np.testing.assert_allclose(torch_logits(model), run['logits'], rtol=0, atol=ATOL)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  assert tokenizer.decode(tokenizer('hello 12')['input_ids']) == 'hello 12'


def test_gguf_adapter_as_llama_cpp_converter_writes_it(run, tmp_path):
  out = export.export_round(run['workdir'], 1, 'gguf', tmp_path / 'a.gguf',
                            model_source=run['source'])
  reader = gguf.GGUFReader(str(out))
  assert gguf_loader.read_field(reader, 'general.type') == 'adapter'
  assert gguf_loader.read_field(reader, 'adapter.type') == 'lora'
  assert gguf_loader.read_field(reader, 'adapter.lora.alpha') == ALPHA
  assert gguf_loader.read_field(reader, 'general.architecture') == 'llama'
  tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
  assert len(tensors) == 2 * CONFIG.num_layers * len(lora_lib.TARGETS)
  saved = nnx.to_pure_dict(run['lora'])['layers']
  base = {name: np.asarray(t.data) for name, t in
          ((t.name, t) for t in gguf.GGUFReader(str(run['model'])).tensors)}
  heads = {'attn_q': CONFIG.num_heads, 'attn_k': CONFIG.num_kv_heads}
  for layer in range(CONFIG.num_layers):
    for ours, theirs in [('q_proj', 'attn_q'), ('k_proj', 'attn_k'), ('v_proj', 'attn_v'),
                         ('o_proj', 'attn_output')]:
      a = np.asarray(saved[layer]['attn'][ours]['lora']['a'])
      b = np.asarray(saved[layer]['attn'][ours]['lora']['b'])
      name = f'blk.{layer}.{theirs}.weight'
      lora_a, lora_b = tensors[name + '.lora_a'], tensors[name + '.lora_b']
      assert lora_a.shape == (RANK, a.shape[0]) and lora_b.shape == (b.shape[1], RANK)
      np.testing.assert_array_equal(lora_a, a.T)
      # llama.cpp adds B @ A * alpha / r to the base tensor as the GGUF stores it (q/k rows in
      # its per-head order): the sum must be the permuted merged HF weight.
      hf_name = f'model.layers.{layer}.self_attn.{ours}.weight'
      merged_hf = run['weights'][hf_name] + (a @ b).T * ALPHA / RANK
      expected = (tc.llama_cpp_permute(merged_hf, heads[theirs]) if theirs in heads
                  else merged_hf)
      np.testing.assert_allclose(base[name] + lora_b @ lora_a * ALPHA / RANK, expected,
                                 rtol=0, atol=1e-5)


def test_bad_round_and_run_dir_are_user_errors(run, tmp_path):
  with pytest.raises(UserError, match=r'no checkpoint for round 7 .*saved rounds: \[1\]'):
    export.export_round(run['workdir'], 7, 'peft', tmp_path / 'x')
  with pytest.raises(UserError, match='not a run directory'):
    export.export_round(tmp_path / 'nothing', 1, 'peft')
  with pytest.raises(UserError, match="unknown --format 'onnx'"):
    export.export_round(run['workdir'], 1, 'onnx')


def run_cli(*args):
  return subprocess.run([sys.executable, str(ROOT / 'experiments' / 'export.py'), *args],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_cli_exports_and_bad_input_is_one_line(run, tmp_path):
  done = run_cli(f'--workdir={run["workdir"]}', '--round=1', '--format=peft',
                 f'--out={tmp_path / "p"}')
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == str(tmp_path / 'p')
  assert (tmp_path / 'p' / 'adapter_model.safetensors').is_file()
  for args, message in [(['--round=3'], 'no checkpoint for round 3'),
                        (['--round=1', '--format=onnx'], "unknown --format 'onnx'")]:
    failed = run_cli(f'--workdir={run["workdir"]}', *args)
    assert failed.returncode == 2
    lines = [line for line in failed.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and message in lines[0], failed.stderr
