"""What a run holds on each device, and every program of a round lowered and compiled.

A run keeps one placed base model (tensor-parallel on 'model'), shared by the trainer
and every generator; the per-stage state is small: LoRA adapters and their optimizer
state, a round generator's merged attention kernels (with int8: each generator's int8
projections) and the prefix caches. `resident` lists these per device, by item;
`round_programs` lowers and compiles the programs of a round (shared-prefix prefill,
prefill parts, the decode loop at its widest cache, adapter merge, the train step) on
the backend's devices, real or abstract (a TPU topology on a CPU host), from abstract or
placed weights, and reads each program's memory and cost from XLA.

Peak of a program = resident state + its arguments that are not resident (a decode
carry, tokens) + outputs not aliased to donated arguments + XLA's temporaries.
"""

import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from inversion_jax import parallel
from inversion_jax.decode import generation
from inversion_jax.decode import programs
from inversion_jax.decode import sampling as sampling_lib
from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.parallel import sharding as sharding_lib
from inversion_jax.train import training


@dataclasses.dataclass(frozen=True)
class RoundShape:
  """The shapes of one 50 x 3 round (the original's), as the generator pads them."""

  rows: int = 150  # Rows of a generation call (tasks x candidates).
  prefix_len: int = 256  # The shared few-shot header, BOS included.
  part_rows: int = 32  # Rows of a prefill part (`prefill_rows`).
  part_width: int = 64  # A part's prompt width.
  cache_prompt: int = 128  # A wave's prompt slots in the decode cache.
  max_new: int = 100  # Generated slots at the widest: the budget.
  train_batch: int = 4
  train_len: int = 512  # Tokens a training row is padded to.
  temperature: float = 0.7
  top_k: int | None = 50
  max_grad_norm: float | None = 1.0
  prefixes_per_generator: int = 3  # generation, reconstruction and rating headers.


@dataclasses.dataclass
class Program:
  """One compiled program's per-device figures (bytes; flops and bytes per call, per
  decode step for the while loop, whose body XLA counts once)."""

  name: str
  arguments: int  # XLA's count: arguments the program uses (jit drops unused ones).
  transient_arguments: int  # Of the arguments, those `resident` does not count.
  outputs: int
  aliased: int
  temps: int
  code: int
  flops: float
  bytes_accessed: float

  @property
  def extra(self) -> int:
    """What the program adds to the resident state while it runs."""
    return self.transient_arguments + (self.outputs - self.aliased) + self.temps + self.code


def per_device_bytes(tree) -> int:
  """Bytes one device holds of placed (or abstract, sharded) arrays: the largest shard
  total over the devices (tensor-parallel shards are equal; replicated ones whole)."""
  totals = {}
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, 'sharding', None)
    itemsize = _itemsize(leaf.dtype)
    if sharding is None:
      totals[None] = totals.get(None, 0) + int(np.prod(leaf.shape)) * itemsize
      continue
    shard = int(np.prod(sharding.shard_shape(leaf.shape))) * itemsize
    for device in sharding.device_set:
      totals[device] = totals.get(device, 0) + shard
  unplaced = totals.pop(None, 0)
  return max(totals.values(), default=0) + unplaced


def _itemsize(dtype) -> int:
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # Raw key data: uint32 words.
    return 4 * int(np.prod(dtype._impl.key_shape))  # noqa: SLF001
  return np.dtype(dtype).itemsize


def abstract_model(config):
  """(graphdef, state) of the model as `jax.ShapeDtypeStruct`s: no weights made."""
  return nnx.split(nnx.eval_shape(lambda: model_lib.Transformer(config, rngs=nnx.Rngs(0))))


def is_abstract(tree) -> bool:
  return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(tree))


@dataclasses.dataclass
class RunState:
  """What `Experiment.build` keeps: the base placed once, and the adapter graph's split
  of it (`base` holds the very arrays of `plain`, not a copy)."""

  plain_graphdef: object
  plain: object  # The adapter-free model, placed.
  graphdef: object  # With adapters.
  lora: object  # Initial adapters (b = 0), unplaced.
  base: object


def run_state(plain_graphdef, plain_state, backend, lora_config, seed: int = 0) -> RunState:
  """Places the base once (on abstract devices: annotates it) and adds the adapters."""
  plain = backend.params(plain_state)
  graphdef, state = lora_lib.add_lora(plain_graphdef, plain, lora_config, seed=seed)
  graphdef, lora, base = lora_lib.split_lora(graphdef, state)
  return RunState(plain_graphdef, plain, graphdef, lora, backend.params(base))


def merged_like(plain, lora_config):
  """`plain` with new (abstract) attention kernels where the adapters fold in: what
  `lora.merge_into_base` makes for a round's generator; every other array shared."""
  targets = set(lora_config.targets)

  def leaf(path, x):
    names = sharding_lib._names(path)  # noqa: SLF001
    if 'kernel' in names and targets & set(names):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  return jax.tree_util.tree_map_with_path(leaf, plain)


def resident(run: RunState, backend, optimizer, generators: dict, shape: RoundShape,
             config) -> dict[str, int]:
  """Per-device bytes of what a whole run keeps, by item. `generators` maps a name to a
  `Generator`; what each holds beyond the shared base is its own item."""
  lora = backend.shared(run.lora)
  items = {'base weights (once)': per_device_bytes(run.plain),
           'LoRA adapters (float32)': per_device_bytes(lora),
           'optimizer state': per_device_bytes(
               backend.shared(jax.eval_shape(optimizer.init, lora)))}
  shared = {id(x) for x in jax.tree.leaves(run.plain)}
  for name, gen in generators.items():
    own = [x for x in jax.tree.leaves(gen.state) if id(x) not in shared]
    items[f'{name} generator: weights beyond the base'] = per_device_bytes(own)
  prefix = prefix_cache(config, backend, shape.prefix_len)
  items['prefix caches'] = per_device_bytes(prefix) * shape.prefixes_per_generator * len(
      generators)
  return items


def prefix_cache(config, backend, length: int):
  """An abstract shared-prefix cache, placed as the generator's programs leave it."""
  shapes = jax.eval_shape(lambda: model_lib.PrefixCache(tuple(
      model_lib.LayerCache(c.k[0], c.v[0]) for c in model_lib.init_cache(config, 1, length))))
  return _abstract_like(shapes, backend)


def _abstract_like(shapes, backend):
  """Abstract values placed as a generator's program leaves its outputs."""
  def place(path, leaf):
    spec = sharding_lib.fitting_spec(sharding_lib.output_spec(path, leaf), leaf.shape,
                                     backend.mesh)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(backend.mesh, spec))

  return jax.tree_util.tree_map_with_path(place, shapes)


def _compile(name, jitted, args, transient_args) -> tuple[Program, object]:
  compiled = jitted.lower(*args).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  program = Program(
      name=name, arguments=int(memory.argument_size_in_bytes),
      transient_arguments=per_device_bytes(transient_args),
      outputs=int(memory.output_size_in_bytes), aliased=int(memory.alias_size_in_bytes),
      temps=int(memory.temp_size_in_bytes), code=int(memory.generated_code_size_in_bytes),
      flops=float(cost.get('flops', 0.0)), bytes_accessed=float(cost.get('bytes accessed', 0.0)))
  return program, compiled


def generator_programs(gen: generation.Generator, shape: RoundShape, label: str,
                       progress=print) -> dict:
  """name -> a function compiling it (a `Program`): the prefix prefill, the first prefill
  part, a part written into the carry and the decode loop at its widest cache, for
  `gen`'s backend."""
  backend, config = gen.backend, gen.config
  sampling = sampling_lib.SamplingConfig(shape.temperature, shape.max_new, top_k=shape.top_k)
  spec = sampling_lib.DecodeSpec(sampling, 0, prompt_slots=shape.cache_prompt)
  batch = parallel.round_up(shape.rows, gen.shapes.batch_multiple)
  # A part holds at most its wave's rows (the generator cuts parts of a wave).
  part = parallel.round_up(min(shape.part_rows, shape.rows), gen.shapes.batch_multiple)

  def run(name, fn, args, transient_args, donate=(), **static):
    progress(f'compiling {label}{name}')
    jitted = backend.compile(fn, gen.graphdef, donate_argnums=tuple(i + 1 for i in donate),
                             **static)
    return _compile(label + name, jitted, (gen.state, *args), transient_args)[0]

  tokens = backend.shared(np.zeros((shape.prefix_len,), np.int32))
  prefix = prefix_cache(config, backend, shape.prefix_len)
  rows = backend.rows((np.zeros((part, shape.part_width), np.int32), np.zeros((part,), np.int32),
                       np.zeros((part, 2), np.uint32)))
  masks = (gen.stop_mask, gen.content_mask)
  carry = _abstract_like(jax.eval_shape(lambda: sampling_lib.blank_state(
      config, batch, shape.cache_prompt, shape.max_new, 0, max_new=shape.max_new)), backend)
  return {
      'prefix prefill': lambda: run('prefix prefill', sampling_lib.prefill_prefix, (tokens,),
                                    tokens),
      'prefill part': lambda: run(
          'prefill part', programs.prefill, (*rows, *masks, prefix), (rows, masks),
          spec=dataclasses.replace(spec, batch=batch, generated_slots=shape.max_new)),
      'prefill into carry': lambda: run(
          'prefill into carry', programs.prefill_into,
          (carry, backend.shared(np.int32(0)), *rows, *masks, prefix), (carry, rows, masks),
          donate=(0,), spec=spec),
      'decode loop (per step)': lambda: run(
          'decode loop (per step)', programs.decode,
          (carry, *masks, prefix, backend.shared(np.int32(shape.max_new))), (carry, masks),
          donate=(0,), spec=spec),
  }


def train_program(trainer: training.Trainer, run: RunState, shape: RoundShape,
                  progress=print) -> Program:
  """One LoRA train step (AdamW, clipping) on a full batch of `train_len` tokens."""
  progress('compiling train step')
  length = shape.train_len + 1  # Inputs and targets are the sequence shifted by one.
  example = training.Example(tuple(range(1, length // 2 + 1)),
                             tuple(range(length // 2 + 1, length + 1)))
  batch = trainer._device_batch([example] * shape.train_batch)  # noqa: SLF001
  lora = trainer.backend.shared(run.lora)
  opt = trainer.backend.shared(jax.eval_shape(trainer.optimizer.init, lora))
  extras = trainer.backend.shared((np.zeros((2,), np.uint32), np.float32(1e-4)))
  program, _ = _compile('train step', trainer._step,  # noqa: SLF001
                        (lora, opt, trainer.device_base, batch, extras), (batch, extras))
  return program


def merge_program(run: RunState, backend, lora_config, progress=print) -> Program:
  """Folding the adapters into the base: a round generator's new attention kernels,
  placed where the base's are."""
  progress('compiling adapter merge')
  lora = backend.shared(run.lora)

  def merge(lora, base):
    merged = nnx.to_pure_dict(lora_lib.merge_into_base(lora, base, lora_config, run.plain))
    return [layer['attn'] for layer in merged['layers'].values()]

  out = jax.eval_shape(merge, lora, run.base)
  out_shardings = jax.tree_util.tree_map_with_path(
      lambda path, x: backend.param_sharding(path, x), out)
  jitted = jax.jit(merge, out_shardings=out_shardings)
  program, _ = _compile('adapter merge', jitted, (lora, run.base), ())
  return program


class ShapeTokenizer:
  """What a `Generator` needs of a tokenizer to be built: its vocabulary's size."""

  bos_id, pad_id, eos_ids, add_bos = 1, 0, (2,), True

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def token_texts(self):
    return ['x'] * self.vocab_size


def check_round(config, backend, shape: RoundShape = RoundShape(), *, quantize: str = 'none',
                lora_config: lora_lib.LoRAConfig = lora_lib.LoRAConfig(), plain_state=None,
                progress=print, report=None) -> dict:
  """Every program of a round compiled on `backend`, and what the run keeps resident.

  `plain_state`: placed or host weights; None compiles from abstract ones. Returns
  `summary`; `report(summary)` is called after each program (compiles take minutes).
  """
  if plain_state is None:
    plain_graphdef, plain_state = abstract_model(config)
  else:
    plain_graphdef = abstract_model(config)[0]
  run = run_state(plain_graphdef, plain_state, backend, lora_config)
  tokenizer = ShapeTokenizer(config.vocab_size)
  make = lambda state: generation.Generator(
      plain_graphdef, state, tokenizer, backend=backend, quantize=quantize, show_progress=False,
      max_batch=shape.rows, prefill_rows=shape.part_rows)
  generators = {'base': make(run.plain), 'round': make(merged_like(run.plain, lora_config))}
  trainer = training.Trainer(
      run.graphdef, run.base,
      training.TrainConfig(batch_size=shape.train_batch, max_grad_norm=shape.max_grad_norm),
      backend=backend, show_progress=False)
  items = resident(run, backend, trainer.optimizer, generators, shape, config)
  label = '' if quantize == 'none' else f'{quantize} '
  compilers = generator_programs(generators['round'], shape, label, progress) | {
      'adapter merge': lambda: merge_program(run, backend, lora_config, progress),
      'train step': lambda: train_program(trainer, run, shape, progress)}
  programs = []
  result = summary(items, programs)
  for name in PROGRAM_ORDER:
    programs.append(compilers[name]())
    result = summary(items, programs)
    if report is not None:
      report(result)
  return result


# The largest first: a check cut short still shows the peak.
PROGRAM_ORDER = ('decode loop (per step)', 'train step', 'prefill part', 'prefill into carry',
                 'prefix prefill', 'adapter merge')


def summary(items: dict, programs: list[Program]) -> dict:
  """The resident items, each program's figures and the peak (bytes per device)."""
  total = sum(items.values())
  peak = max(programs, key=lambda p: p.extra, default=None)
  return dict(resident=items, resident_total=total,
              programs=[dataclasses.asdict(p) | {'extra': p.extra, 'peak': total + p.extra}
                        for p in programs],
              peak=dict(program=peak.name if peak else None,
                        bytes=total + (peak.extra if peak else 0)))
