"""The two backends behind one interface: place inputs, compile a pure function, fetch.

Callers hand a backend NumPy (or placed) pytrees and say what each one is:
`params` (weights), `rows` (a global batch, rows on one axis, split over the data-parallel
devices) or `shared` (small values every device needs whole: a mask, a step's key).
On a mesh of abstract devices (a TPU topology from `jax.experimental.topologies`, on a
host without that accelerator) "placing" gives `jax.ShapeDtypeStruct`s with their
sharding, so the same pure functions lower and compile without any weights.
`compile(fn, *static)` returns fn on the placed arguments; `compile_step` builds a train
step from a function that returns SUMS (loss, gradients, token counts): the pmap backend
adds them across devices with `psum`, the mesh backend needs nothing (its arrays are
global), so the step itself never names a device axis.
"""

import abc
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib
from inversion_jax.parallel import distributed
from inversion_jax.parallel import sharding as sharding_lib

AXIS = 'devices'  # pmap's device axis.
BACKENDS = ('pmap', 'mesh')


class Backend(abc.ABC):
  """Where a run's computations execute; `data_size` rows-shards per global batch."""

  kind: str
  data_size: int

  @property
  def is_main(self) -> bool:
    """Process 0: the only one that prints and writes files."""
    return distributed.is_main()

  def param_sharding(self, path, leaf):
    """Where one weight is loaded to; None: the default device (`params` places it)."""
    del path, leaf

  @abc.abstractmethod
  def params(self, tree): ...

  @abc.abstractmethod
  def rows(self, tree, axis: int = 0): ...

  @abc.abstractmethod
  def shared(self, tree): ...

  @abc.abstractmethod
  def fetch(self, tree, axis: int = 0):
    """NumPy of placed rows: the global batch, on every process."""

  @abc.abstractmethod
  def fetch_shared(self, tree):
    """NumPy of a placed value every device holds whole."""

  @abc.abstractmethod
  def _wrap(self, fn, donate_argnums): ...

  @abc.abstractmethod
  def _reduce(self, tree):
    """The sum over data-parallel shards of per-shard sums."""

  @property
  def platform(self) -> str:
    """The platform of the backend's devices: what traced code is compiled for."""
    return self.devices[0].platform

  def _traced(self, fn, out_specs):
    """fn traced for this backend's platform (`model.compute_platform`), its outputs
    constrained to `out_specs(path, leaf)` where given (no output layout left to XLA)."""
    platform = self.platform

    def traced(*args):
      with model_lib.compute_platform(platform):
        out = fn(*args)
      return out if out_specs is None else self._constrain(out, out_specs)

    return traced

  def _constrain(self, tree, out_specs):
    return tree

  def compile(self, fn, *static, donate_argnums=(), **static_kw):
    """fn(*static, *placed, **static_kw), compiled once per (fn, static values);
    `donate_argnums` count the placed arguments."""
    return self._compiled(fn, static, tuple(sorted(static_kw.items())), None,
                          tuple(donate_argnums))

  def compile_step(self, sums_fn, update_fn, *static, donate_argnums=(0, 1)):
    """step(params, opt_state, frozen, batch, extras) = update_fn(params, opt_state,
    reduce(sums_fn(*static, params, frozen, batch, extras)), extras): one optimizer update
    (`extras`: shared values such as the step's key and learning rate)."""
    return self._compiled(sums_fn, static, (), update_fn, donate_argnums)

  @functools.lru_cache(maxsize=64)  # noqa: B019 (backends live as long as a run)
  def _compiled(self, fn, static, static_kw, update_fn, donate_argnums):
    bound = functools.partial(fn, *static, **dict(static_kw))
    if update_fn is None:  # A generator's call: rows out, caches on (data, model).
      return self._wrap(self._traced(bound, sharding_lib.output_spec), donate_argnums)

    def step(params, opt_state, frozen, batch, extras):
      sums = self._reduce(bound(params, frozen, batch, extras))
      return update_fn(params, opt_state, sums, extras)

    # Adapters, optimizer state and loss: every device holds them whole.
    return self._wrap(self._traced(step, lambda path, leaf: P()), donate_argnums)


class PmapBackend(Backend):
  """Today's data parallelism: replicate, split rows on a leading device axis, pmap."""

  kind = 'pmap'

  def __init__(self, devices):
    self.devices = list(devices)
    self.data_size = len(self.devices)
    mesh = Mesh(np.asarray(self.devices), (AXIS,))
    self._split = NamedSharding(mesh, P(AXIS))

  def params(self, tree):
    def put(x):
      if isinstance(x, jax.Array) and x.sharding == self._split:
        return x  # Already placed: shared, not copied (one base for every stage).
      return self._replicate(x)

    return jax.tree.map(put, tree)

  def shared(self, tree):
    return jax.tree.map(self._replicate, tree)

  def _replicate(self, x):
    n = self.data_size
    return jax.device_put(jnp.broadcast_to(x, (n, *np.shape(x))), self._split)

  def rows(self, tree, axis: int = 0):
    n = self.data_size

    def split(x):
      x = np.asarray(x)
      if x.shape[axis] % n:
        raise ValueError(f'{x.shape[axis]} rows do not divide over {n} devices')
      x = x.reshape(*x.shape[:axis], n, x.shape[axis] // n, *x.shape[axis + 1:])
      return jax.device_put(np.moveaxis(x, axis, 0), self._split)

    return jax.tree.map(split, tree)

  def fetch(self, tree, axis: int = 0):
    def join(x):
      x = np.moveaxis(np.asarray(x), 0, axis)
      return x.reshape(*x.shape[:axis], -1, *x.shape[axis + 2:])

    return jax.tree.map(join, tree)

  def fetch_shared(self, tree):
    return jax.tree.map(lambda x: np.asarray(x[0]), tree)

  def _wrap(self, fn, donate_argnums):  # pmap's outputs keep their device axis.
    return jax.pmap(fn, axis_name=AXIS, donate_argnums=donate_argnums)

  def _reduce(self, tree):
    return jax.lax.psum(tree, AXIS)


class MeshBackend(Backend):
  """`jit` over global arrays on a ('data', 'model') mesh, across processes if any."""

  kind = 'mesh'

  def __init__(self, mesh: Mesh, param_specs=None):
    self.mesh = mesh
    self.devices = list(mesh.devices.flat)
    self.data_size = mesh.shape['data']
    self.param_specs = param_specs  # Path -> PartitionSpec; None: replicated.
    # Devices no client of this process drives (a TPU topology on a CPU host): placing
    # gives abstract values, and compiled programs can only be lowered and compiled.
    self.abstract = not set(self.devices) <= set(jax.devices())

  def param_sharding(self, path, leaf) -> NamedSharding:
    """Where one weight lives: tensor-parallel on 'model', or on every device."""
    spec = P() if self.param_specs is None else self.param_specs(path, leaf)
    return NamedSharding(self.mesh, spec)

  def params(self, tree):
    return jax.tree_util.tree_map_with_path(
        lambda path, x: self._put(x, self.param_sharding(path, x)), tree)

  def shared(self, tree):
    return jax.tree.map(lambda x: self._put(x, NamedSharding(self.mesh, P())), tree)

  def rows(self, tree, axis: int = 0):
    spec = P(*([None] * axis), 'data')
    return jax.tree.map(lambda x: self._put(x, NamedSharding(self.mesh, spec)), tree)

  def _constrain(self, tree, out_specs):
    def constrain(path, leaf):
      spec = sharding_lib.fitting_spec(out_specs(path, leaf), leaf.shape, self.mesh)
      return jax.lax.with_sharding_constraint(leaf, NamedSharding(self.mesh, spec))

    return jax.tree_util.tree_map_with_path(constrain, tree)

  def _put(self, x, sharding):
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and x.sharding == sharding:
      return x  # Already placed there: shared, not copied (one base for every stage).
    if self.abstract or isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    # Every process knows the whole global value; each hands over its devices' pieces.
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  def fetch(self, tree, axis: int = 0):
    del axis  # Global arrays keep their layout.
    return jax.tree.map(_gather, tree)

  def fetch_shared(self, tree):
    return jax.tree.map(
        lambda x: np.asarray(x if x.is_fully_addressable else x.addressable_data(0)), tree)

  def _wrap(self, fn, donate_argnums):
    return jax.jit(fn, donate_argnums=donate_argnums)

  def _reduce(self, tree):
    return tree


def _gather(x):
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def global_devices(num_devices: int):
  """The first `num_devices` local devices of every process, process by process."""
  by_process = {}
  for device in jax.devices():
    by_process.setdefault(device.process_index, []).append(device)
  for process, devices in by_process.items():
    if len(devices) < num_devices:
      raise UserError(f'--num_devices={num_devices} but process {process} sees only '
                      f'{len(devices)} devices')
  return [d for p in sorted(by_process) for d in sorted(by_process[p], key=lambda d: d.id)
          [:num_devices]]


def check_settings(kind: str, shard_params: bool = False, model_axis: int = 0) -> None:
  """UserError for flag combinations no backend runs (before any model is loaded)."""
  if kind not in BACKENDS:
    raise UserError(f'unknown --parallel {kind!r}; choose one of {", ".join(BACKENDS)}')
  if shard_params and kind != 'mesh':
    raise UserError('--shard_params needs --parallel=mesh (pmap replicates the weights)')
  if model_axis and not shard_params:
    raise UserError('--model_axis sets how many devices share the weights: it needs '
                    '--shard_params')


def make_backend(kind: str = 'pmap', num_devices: int = 1, *, shard_params: bool = False,
                 model_axis: int = 0, model_config=None, devices=None) -> Backend:
  """The backend for `--parallel=kind` over `num_devices` devices per process.

  One device in one process runs on a 1 x 1 mesh (plain `jit`) whatever the kind: pmap of
  one device would only add an axis. `model_axis` (with `shard_params`; 0 = all devices)
  sets the mesh's 'model' size; the rest is 'data'. `devices`, when given, is the whole
  device list (`num_devices` is then unused): any devices, a TPU topology's abstract ones
  included (`compile_check.py` lowers a run for a pod from a CPU host that way).
  """
  check_settings(kind, shard_params, model_axis)
  if devices is None:
    if num_devices < 1:
      raise UserError(f'--num_devices must be a positive integer, got {num_devices}')
    devices = global_devices(num_devices)
  devices = list(devices)
  if kind == 'pmap' and jax.process_count() > 1:
    raise UserError('a multi-process run needs --parallel=mesh (pmap spans one process)')
  if kind == 'pmap' and len(devices) > 1:
    return PmapBackend(devices)
  model = (model_axis or len(devices)) if shard_params else 1
  if model < 1 or len(devices) % model:
    raise UserError(f'--model_axis={model} does not divide the {len(devices)} devices')
  specs = None
  if shard_params:
    sharding_lib.check_divisible(model_config, model)
    specs = sharding_lib.tensor_parallel_spec
  mesh = Mesh(np.asarray(devices).reshape(len(devices) // model, model), ('data', 'model'))
  return MeshBackend(mesh, specs)
