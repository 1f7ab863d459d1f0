"""Data parallelism across local devices with `jax.pmap`, kept in one small module.

Parameters are replicated, batches get a leading device axis, gradients are averaged
with `pmean` by the callers' step functions. Since JAX 0.8 `pmap` is built on
`jit` + `shard_map`; a mesh / `NamedSharding` path (which can also shard parameters of
models too large to replicate) would sit beside these helpers.
"""

import jax
import jax.numpy as jnp
import numpy as np

AXIS = 'devices'


def local_device_count() -> int:
  return jax.local_device_count()


def replicate(tree, num_devices: int | None = None):
  """Copies every leaf to each local device, with a leading device axis."""
  devices = jax.local_devices()[: num_devices or jax.local_device_count()]
  sharding = device_sharding(devices)
  return jax.tree.map(
      lambda x: jax.device_put(jnp.broadcast_to(x, (len(devices), *x.shape)), sharding), tree)


def device_sharding(devices) -> jax.sharding.NamedSharding:
  """Splits the leading axis over `devices`: the layout pmap expects for its inputs."""
  mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def unreplicate(tree):
  """Takes device 0's copy of a replicated tree."""
  return jax.tree.map(lambda x: x[0], tree)


def shard(tree, num_devices: int):
  """[B, ...] -> [num_devices, B / num_devices, ...]; B must divide evenly."""

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % num_devices:
      raise ValueError(f'batch {x.shape[0]} does not divide over {num_devices} devices')
    return x.reshape(num_devices, x.shape[0] // num_devices, *x.shape[1:])

  return jax.tree.map(split, tree)


def unshard(tree):
  """[num_devices, b, ...] -> [num_devices * b, ...]."""
  return jax.tree.map(lambda x: np.asarray(x).reshape(-1, *x.shape[2:]), tree)


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def length_bucket(n: int, minimum: int = 16) -> int:
  """Pads lengths to a few shapes: powers of two up to 256, then multiples of 128.

  Each distinct shape costs a compilation (seconds for a 30-layer decode loop), so a
  run should see a handful of them; padding wastes at most half a short row.
  """
  if n <= 256:
    return max(minimum, 1 << max(0, (n - 1).bit_length()))
  return round_up(n, 128)
