"""Compiled programs held in memory: `release_compiled` drops them, results stay the same."""

import jax
import jax.numpy as jnp
import numpy as np

from inversion_jax import compile_cache


def test_release_compiled_drops_programs_and_keeps_results():
  square = jax.jit(lambda x: x * x + 1)
  for width in (3, 5, 7):  # Three shapes: three programs.
    square(jnp.arange(width, dtype=jnp.float32))
  assert square._cache_size() == 3  # pylint: disable=protected-access
  before = np.asarray(square(jnp.arange(5, dtype=jnp.float32)))
  compile_cache.release_compiled()
  assert square._cache_size() == 0  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.asarray(square(jnp.arange(5, dtype=jnp.float32))), before)
  assert square._cache_size() == 1  # pylint: disable=protected-access
