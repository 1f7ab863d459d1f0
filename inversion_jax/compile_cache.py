"""JAX's persistent compilation cache, on by default for the drivers and the tests.

A 30-layer decode loop takes tens of seconds to compile on a small CPU; the cache makes
the second run of the same shapes (a resumed run, the next experiment) start at once.
"""

import os
import pathlib

import jax


def enable(directory: str | os.PathLike | None = None) -> pathlib.Path:
  """Points JAX at a cache directory (default: $INVERSION_JAX_CACHE or ~/.cache/inversion_jax)."""
  root = directory or os.environ.get('INVERSION_JAX_CACHE') or '~/.cache/inversion_jax'
  path = pathlib.Path(root).expanduser() / 'xla'
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError:
    return path  # An unwritable cache only costs compile time; the run itself is fine.
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path
