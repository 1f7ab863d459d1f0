"""Where computations run: one seam (`Backend`), two implementations.

The model, sampler, scorer and train step are written once, for a global batch on one
logical device; a backend places their inputs and compiles them:

- `pmap`: parameters replicated on each local device, rows split on a leading device
  axis, per-device sums added with `psum` by the backend (`jax.pmap`).
- `mesh`: `jax.jit` over global arrays with `NamedSharding` on a `Mesh(('data', 'model'))`:
  rows on `data`; with `shard_params` the weights tensor-parallel on `model`
  (`sharding.py`); XLA inserts the collectives. Works across processes
  (`distributed.py`): each process feeds its devices' share of every global batch.

One device (and one process) is the mesh backend on a 1 x 1 mesh: plain `jit`.
"""

from inversion_jax.parallel.backends import AXIS, BACKENDS, Backend, MeshBackend, PmapBackend
from inversion_jax.parallel.backends import check_settings, make_backend
from inversion_jax.parallel.shapes import group_by_length, length_bucket, round_up

__all__ = ['AXIS', 'BACKENDS', 'Backend', 'MeshBackend', 'PmapBackend', 'check_settings', 'make_backend',
           'group_by_length', 'length_bucket', 'round_up']
