"""Compiled programs: JAX's persistent compilation cache (on by default for the drivers and
the tests), and dropping the programs a process holds in memory.

A 30-layer decode loop takes tens of seconds to compile on a small CPU; the cache makes
the second run of the same shapes (a resumed run, the next experiment) start at once.
"""

import ctypes
import gc
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


def release_compiled() -> None:
  """Drops every compiled program JAX holds in memory and hands the freed heap back to the
  operating system; a program needed again is traced again and reloaded from the persistent
  cache.

  Every shape a process meets (prefill widths, decode buckets, packed train widths) keeps
  its program for the process's life: a run's memory grows with the shapes it has met, and
  glibc keeps the freed heap unless asked (BUILD_NOTES, Gotchas, "What holds a run's memory").
  """
  jax.clear_caches()
  gc.collect()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):  # Not glibc: the heap stays with the process.
    pass
