"""The experiment scripts: generate.py as a real subprocess, benchmark_sampler.py in-process.

generate.py runs on a tiny random HF checkpoint written here (byte-level BPE tokenizer from
`tiny_checkpoints.tiny_vocab`), so nothing is downloaded. The benchmark's full run is minutes
long; its functions are imported and run once on `ModelConfig.tiny()`.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers

import tiny_checkpoints as tc
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
GENERATE = ROOT / 'experiments' / 'generate.py'
# Vocab of tiny_vocab(): 3 specials, 256 bytes, 7 merges; id 1 is BOS, 2 is EOS.
CONFIG = ModelConfig.tiny(vocab_size=266)


def write_tokenizer_json(path: pathlib.Path) -> None:
  """tiny_vocab() as an HF tokenizer.json (byte-level BPE)."""
  tokens, types, merges = tc.tiny_vocab()
  vocab = {token: index for index, token in enumerate(tokens)}
  backend = tokenizers.Tokenizer(models.BPE(vocab, [tuple(m.split(' ')) for m in merges]))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([t for t, kind in zip(tokens, types) if kind == 3])
  backend.save(str(path / 'tokenizer.json'))


@pytest.fixture(scope='module')
def tiny_hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tiny_hf')
  tc.write_hf_dir(path, CONFIG, tc.random_hf_weights(CONFIG))
  write_tokenizer_json(path)
  return path


def run_generate(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, str(GENERATE), *args], capture_output=True, text=True,
                        env=env, timeout=120, check=False)


@pytest.mark.slow
def test_generate_prints_one_line_per_sample(tiny_hf_dir):
  result = run_generate(f'--model={tiny_hf_dir}', '--prompt=hello world', '--max_new_tokens=5',
                        '--batch=3', '--temperature=1.0')
  assert result.returncode == 0, result.stderr
  assert len(result.stdout.splitlines()) == 3
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('args, message', [
    (['--model=no-such-model'], 'smollm2-135m-instruct'),
    (['--batch=0'], '--batch'),
])
@pytest.mark.slow
def test_generate_bad_input_is_one_line_exit_2(args, message):
  result = run_generate(*args)
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert result.returncode == 2, result.stderr
  assert len(errors) == 1 and message in errors[0], result.stderr
  assert 'Traceback' not in result.stderr and not result.stdout


# ----------------------------------------------------------------------------- benchmark


@pytest.fixture(scope='module')
def bench():
  spec = importlib.util.spec_from_file_location(
      'benchmark_sampler', ROOT / 'experiments' / 'benchmark_sampler.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_benchmark_runs_on_tiny_model(bench):
  config = ModelConfig.tiny()
  flat = bench.random_flat_params(config)
  graphdef, state = model_lib.from_flat_params(config, flat)
  settings = bench.Settings(batches=(2,), new_tokens=2, prompt_len=4, repeats=1,
                            matmul_repeats=1, matmul_size=128, skip_transformers=True,
                            prefix_len=8, suffix_len=4, prefix_rows=2)
  results = bench.run_benchmark(graphdef, state, config, flat, settings, 'tiny')
  json.dumps(results)  # JSON-ready as it is.
  (row,) = results['decode']
  assert row['batch'] == 2 and 'transformers' not in row
  floor = row['ours']['matmul_floor_ms']  # None when noise swamps a tiny model's steps.
  assert floor is None or floor > 0
  assert results['matmul_ceiling']['float32']['gflops'] > 0
  assert results['prefix_prefill']['max_abs_logit_diff'] < 1e-4  # Shared prefix: same logits.
  assert results['machine']['cpu_count'] >= 1
  assert 'tiny' in bench.format_table(results)


@pytest.mark.parametrize('tie', [True, False])
def test_decode_params_counts_the_head_once(bench, tie):
  config = ModelConfig.tiny(tie_embeddings=tie)
  layers = config.num_layers * (
      2 * config.embed_dim + config.embed_dim * config.head_dim * (
          2 * config.num_heads + 2 * config.num_kv_heads) + 3 * config.embed_dim *
      config.hidden_dim)
  head = config.vocab_size * config.embed_dim
  assert bench.decode_params(config) == layers + config.embed_dim + head


@pytest.mark.parametrize('tie', [True, False])
@pytest.mark.slow
def test_transformers_model_holds_our_weights(bench, tie):
  """The benchmark compares like with like: same logits, and its generate runs."""
  torch = pytest.importorskip('torch')
  pytest.importorskip('transformers')
  config = ModelConfig.tiny(tie_embeddings=tie)
  flat = bench.random_flat_params(config, seed=1)
  graphdef, state = model_lib.from_flat_params(config, flat)
  hf = bench.hf_model(config, flat)
  tokens = bench.random_tokens(config, (2, 7))
  positions = np.broadcast_to(np.arange(7), tokens.shape)
  ours = np.asarray(model_lib.forward(graphdef, state, tokens, positions)[0])
  with torch.no_grad():
    theirs = hf(torch.from_numpy(tokens).long()).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  calls = {'hf': bench.hf_calls(hf, config, batch=2, prompt_len=3, new_tokens=2)}
  timing = bench.interleaved_rates(calls, batch=2, new_tokens=2, repeats=1)['hf']
  assert timing['batch'] == 2 and timing['seconds_n_plus_1'] > 0


def test_samplers_are_timed_in_turns(bench):
  """Ours and transformers alternate call by call, so machine drift hits both alike."""
  order = []

  def call(name):
    return lambda: order.append(name)

  calls = {'ours': (call('ours N+1'), call('ours 1')),
           'transformers': (call('hf N+1'), call('hf 1'))}
  floors = {'ours': (call('ours floor 5'), call('ours floor 1')),
            'transformers': (call('hf floor 5'), call('hf floor 1'))}
  rates = bench.interleaved_rates(calls, batch=4, new_tokens=8, repeats=2, floors=floors,
                                  floor_steps=4)
  assert order == ['ours N+1', 'ours 1', 'ours floor 5', 'ours floor 1',
                   'hf N+1', 'hf 1', 'hf floor 5', 'hf floor 1'] * 2
  assert set(rates) == {'ours', 'transformers'}
  assert all(rate['batch'] == 4 and 'matmul_floor_ms' in rate for rate in rates.values())


@pytest.mark.parametrize('tie', [True, False])
def test_matmul_floors_multiply_the_same_weights(bench, tie):
  """Both floors run the same products: ours on our kernels, transformers on its modules."""
  torch = pytest.importorskip('torch')
  pytest.importorskip('transformers')
  config = ModelConfig.tiny(tie_embeddings=tie)
  flat = bench.random_flat_params(config, seed=2)
  hf = bench.hf_model(config, flat)
  x = np.random.default_rng(0).standard_normal((3, config.embed_dim)).astype(np.float32)
  kernels, head = bench.ours_projection_weights(flat, config)
  ours, ours_side = bench._ours_projections(kernels, head, x, tie)
  with torch.no_grad():
    theirs, their_side = bench.projection_chain(torch.from_numpy(x), bench.hf_projections(hf),
                                                hf.lm_head)
  np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-5, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ours_side), their_side.numpy(), atol=1e-5, rtol=1e-4)
  for full, one in (bench.ours_floor_calls(flat, config, batch=2, steps=1),
                    bench.hf_floor_calls(hf, config, batch=2, steps=1)):
    full(), one()


def test_decode_rates_from_the_two_timings(bench):
  rate = bench.decode_rates(batch=8, new_tokens=10, t_full=3.0, t_one=1.0)
  assert rate['tok_s'] == pytest.approx(8 * 10 / 2.0)
  assert rate['ms_per_step'] == pytest.approx(200.0)
  assert bench.decode_rates(8, 10, 1.0, 1.5)['tok_s'] is None  # Noise swamped the gap.


@pytest.mark.parametrize('call', ['generate', 'rate'])
@pytest.mark.slow
def test_compaction_benchmark_checks_its_peers_agree(tiny_gguf, tmp_path, call):  # noqa: F811
  """benchmark_compaction.py on the tiny model: the one-call loop, compaction and length
  grouping give the same texts (it exits 2 when they do not) and it writes its figures."""
  out = tmp_path / 'compaction.json'
  result = subprocess.run(
      [sys.executable, str(ROOT / 'experiments' / 'benchmark_compaction.py'),
       f'--model={tiny_gguf}', '--tasks=5', '--candidates=2', '--max_new_tokens=12',
       '--repeats=1', '--max_batch=8', f'--call={call}', f'--output_json={out}'],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  figures = json.loads(out.read_text())
  assert figures['same_texts'] and figures['rows'] == 10
  assert set(figures['steady_seconds']) == {'one_call', 'compacting', 'compacting_grouped'}
