"""LoRA fine-tuning: examples to packed (or padded) rows, a pure train step, one epoch.

The loss is cross-entropy summed over real target tokens only (the original also
trained on padding: we do not), optionally only over the command tokens. The step
returns loss and gradient SUMS plus the token count of the rows it sees; the backend
adds them over devices (`parallel`), and one division gives exactly the single-device,
token-weighted mean of the logical batch (`batch_size` examples, 4 as in the original),
whatever the split. Gradient accumulation scans over micro-batches inside the step, so
a global batch that does not fit one device at once is still one optimizer update, and
the AdamW update runs inside the same compiled step.

Packing (`TrainConfig.pack`, the default) lays a micro-batch's examples one after
another in one row, each attending only to itself with its own positions: the same
token losses, gradients and dropout masks as one example a row, without padding every
row to the batch's longest example. An example's weight in the update is its number of
target tokens over the logical batch's, packed or not.
"""

import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from inversion_jax import parallel
from inversion_jax.nn import model as model_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The original's defaults: AdamW lr 2e-4, batch 4, one epoch, linear decay to 0."""

  learning_rate: float = 2e-4
  batch_size: int = 4
  epochs: int = 1
  weight_decay: float = 0.0
  completion_only: bool = False  # True: loss on the command tokens only.
  micro_batch_size: int | None = None  # Rows per device per pass; None = all at once.
  length_multiple: int = 16  # Unpacked rows: widths are powers of two from this up.
  # Pack each micro-batch's examples into one row (block-diagonal attention, positions
  # restarting per example), its width a multiple of `pack_multiple`: no row pads to the
  # batch's longest example. False: one example a row (the layout before packing).
  pack: bool = True
  pack_multiple: int = 64
  max_grad_norm: float | None = None  # HF Trainer's default is 1.0 (--preset=original).

  def __post_init__(self):
    if self.learning_rate <= 0 or self.batch_size < 1 or self.epochs < 1:
      raise ValueError('learning_rate, batch_size and epochs must be positive')
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      raise ValueError(f'max_grad_norm must be > 0, got {self.max_grad_norm}')


class NonFiniteLoss(RuntimeError):
  """A training step produced a NaN or infinite loss."""


@dataclasses.dataclass(frozen=True)
class Example:
  """One tokenised training row: prompt tokens then completion tokens (EOS included)."""

  prompt: tuple[int, ...]
  completion: tuple[int, ...]


def make_example(tokenizer, prompt: str, completion: str, add_bos: bool = True) -> Example:
  """Prompt + completion are the ids of the joined text (`Tokenizer.split_joined`): a
  SentencePiece tokenizer would give a separately encoded completion a stray '▁'."""
  bos = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
  prompt_ids, completion_ids = tokenizer.split_joined(prompt, completion)
  return Example(tuple(bos + list(prompt_ids)), tuple(list(completion_ids) + [tokenizer.eos_ids[0]]))


class Rows(NamedTuple):
  """A micro-batch's rows, [R, W] each (or [accum, R, W] for a whole step).

  A row holds one example (`batch_arrays`) or several packed one after another
  (`pack_arrays`); either way a token knows its position within its own example (RoPE
  restarts at 0 for each), its segment (the example's slot in the row; -1 = padding; a
  token attends only within its segment) and its example's index in the global batch
  (its dropout key). Targets carry weight 1 where they are real tokens (and, with
  completion_only, completion tokens), so both layouts give the same loss sums.
  """

  inputs: np.ndarray
  targets: np.ndarray
  weights: np.ndarray
  positions: np.ndarray
  segments: np.ndarray
  examples: np.ndarray


def layout_rows(groups: Sequence[Sequence[tuple[int, Example]]], width: int,
                completion_only: bool, pad_id: int) -> Rows:
  """Row r holds the (global index, example) pairs of groups[r], left to right.

  Example sequence s (prompt + completion) gives inputs s[:-1] and targets s[1:]; a
  sequence longer than what is left of the row is cut.
  """
  shape = (len(groups), width)
  inputs = np.full(shape, pad_id, np.int32)
  targets = np.full(shape, pad_id, np.int32)
  weights = np.zeros(shape, np.float32)
  positions = np.zeros(shape, np.int32)
  segments = np.full(shape, -1, np.int32)
  indices = np.zeros(shape, np.int32)
  for r, group in enumerate(groups):
    start = 0
    for slot, (index, example) in enumerate(group):
      sequence = np.asarray(example.prompt + example.completion, np.int32)
      sequence = sequence[: width - start + 1]
      n = len(sequence) - 1
      if n <= 0:
        break
      end = start + n
      inputs[r, start:end], targets[r, start:end] = sequence[:-1], sequence[1:]
      first_target = len(example.prompt) - 1 if completion_only else 0
      weights[r, start + first_target:end] = 1.0
      positions[r, start:end] = np.arange(n)
      segments[r, start:end], indices[r, start:end] = slot, index
      start = end
  return Rows(inputs, targets, weights, positions, segments, indices)


def batch_arrays(examples: Sequence[Example], rows: int, width: int, completion_only: bool,
                 pad_id: int) -> Rows:
  """One example a row, right-padded to `width`; rows beyond len(examples) are padding."""
  groups = [[(i, e)] for i, e in enumerate(examples)] + [[]] * (rows - len(examples))
  return layout_rows(groups, width, completion_only, pad_id)


def pack_arrays(examples: Sequence[Example], rows: int, width: int, completion_only: bool,
                pad_id: int) -> Rows:
  """Examples packed `ceil(len / rows)` to a row, in order: row r holds examples
  r*k .. r*k+k-1 (k per row), so no row is padded to the batch's longest example."""
  per_row = max(1, -(-len(examples) // rows))
  indexed = list(enumerate(examples))
  groups = [indexed[r * per_row:(r + 1) * per_row] for r in range(rows)]
  return layout_rows(groups, width, completion_only, pad_id)


def example_lengths(examples: Sequence[Example]) -> list[int]:
  """Input tokens of each example (its sequence less the last token)."""
  return [len(e.prompt) + len(e.completion) - 1 for e in examples]


def token_keys(key, rows: Rows):
  """Per-token dropout keys [.., W]: fold_in(fold_in(key, example), position), the same
  wherever the example sits (its row, its offset in a packed row, its device)."""
  fold = lambda example, position: jax.random.fold_in(jax.random.fold_in(key, example),
                                                      position)
  flat = jax.vmap(fold)(rows.examples.reshape(-1), rows.positions.reshape(-1))
  return flat.reshape(rows.examples.shape)


def loss_sums(lora, base, graphdef, rows: Rows, dropout_keys):
  """(sum of weighted token losses, sum of weights) for one micro-batch of `Rows`.

  `dropout_keys` holds one key per token ([R, W], `token_keys`) or is None (no dropout).
  Mixed precision like HF's AMP: the adapters are float32 masters, cast to the base
  weights' dtype for the forward pass (a no-op in float32); the loss is float32.
  """
  compute = compute_dtype(base)
  lora = jax.tree.map(lambda x: x.astype(compute), lora)
  logits, _, _ = model_lib.forward(graphdef, (lora, base), rows.inputs, rows.positions,
                                   dropout_key=dropout_keys, segment_ids=rows.segments)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                           rows.targets)
  return jnp.sum(losses * rows.weights), jnp.sum(rows.weights)


def compute_dtype(base):
  """The dtype of the frozen base weights: the forward pass runs in it."""
  return next(x.dtype for x in jax.tree.leaves(base) if jnp.issubdtype(x.dtype, jnp.floating))


def gradient_sums(graphdef, lora, base, batch, extras):
  """(gradient sums, loss sum, token count) over the rows this call sees.

  `batch` = `Rows` of [accum, rows, W]; the scan over the accumulation axis adds
  micro-batches. A token's dropout key derives from its example's index in the global
  batch and its position in the example (`token_keys`), so the sums do not depend on how
  the examples were split over devices or micro-batches or packed into rows. No device
  axis is named here: the backend adds the sums of its shards (`Backend.compile_step`).
  """
  key = jax.random.wrap_key_data(extras[0])
  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def accumulate(carry, micro):
    grads, loss, count = carry
    micro = Rows(*micro)
    (micro_loss, micro_count), micro_grads = grad_fn(lora, base, graphdef, micro,
                                                     token_keys(key, micro))
    grads = jax.tree.map(jnp.add, grads, micro_grads)
    return (grads, loss + micro_loss, count + micro_count), None

  zeros = jax.tree.map(jnp.zeros_like, lora)
  init = (zeros, jnp.float32(0), jnp.float32(0))
  return jax.lax.scan(accumulate, init, batch)[0]


def apply_sums(lora, opt_state, sums, extras, *, optimizer):
  """One optimizer update from the whole batch's sums: token-weighted mean gradients.

  `extras[1]` is this step's learning rate (the linear decay), written into the
  injected hyperparameters, so the schedule costs no recompilation.
  """
  grads, loss, count = sums
  count = jnp.maximum(count, 1.0)
  grads = jax.tree.map(lambda g: g / count, grads)
  hyper = dict(opt_state.hyperparams)
  hyper['learning_rate'] = jnp.asarray(extras[1], hyper['learning_rate'].dtype)
  opt_state = opt_state._replace(hyperparams=hyper)
  updates, opt_state = optimizer.update(grads, opt_state, lora)
  return optax.apply_updates(lora, updates), opt_state, loss / count


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
  """AdamW with the learning rate as state, so the per-step schedule costs no recompile;
  with `max_grad_norm`, gradients are clipped to that global norm first (HF Trainer)."""
  if config.max_grad_norm is None:  # The state keeps the shape older checkpoints have.
    return optax.inject_hyperparams(optax.adamw)(
        learning_rate=config.learning_rate, weight_decay=config.weight_decay)
  return optax.inject_hyperparams(_clipped_adamw, static_args=('max_grad_norm',))(
      learning_rate=config.learning_rate, weight_decay=config.weight_decay,
      max_grad_norm=config.max_grad_norm)


def _clipped_adamw(learning_rate, weight_decay, max_grad_norm):
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adamw(learning_rate, weight_decay=weight_decay))


@dataclasses.dataclass
class EpochResult:
  lora: object
  opt_state: object
  losses: list[float]
  # Steps whose batch shape this trainer had not run before, and their seconds: each
  # compiled the step (or loaded it from the persistent cache) before running it.
  new_shapes: int = 0
  new_shape_seconds: float = 0.0


class Trainer:
  """Runs epochs of LoRA updates for one model on a backend (`parallel.make_backend`)."""

  def __init__(self, graphdef, base, config: TrainConfig, num_devices: int = 1,
               pad_id: int = 0, show_progress: bool = True, backend=None):
    self.graphdef, self.config = graphdef, config
    self.backend = backend or parallel.make_backend('pmap', num_devices)
    self.pad_id, self.show_progress = pad_id, show_progress
    self.optimizer = make_optimizer(config)
    self.device_base = self.backend.params(base)
    self._step = self.backend.compile_step(
        gradient_sums, functools.partial(apply_sums, optimizer=self.optimizer), graphdef)
    # A batch the data shards do not divide (the original's 4 rows on 8 shards) is
    # padded with weightless rows: the sums, so the loss and gradients, are unchanged.
    per_shard = -(-config.batch_size // self.backend.data_size)
    self.micro = min(config.micro_batch_size or per_shard, per_shard)
    self.accum = math.ceil(per_shard / self.micro)
    self.shapes_seen: set[tuple[int, ...]] = set()

  def init_opt_state(self, lora):
    return self.optimizer.init(lora)

  def run(self, lora, opt_state, examples: Sequence[Example], seed: int) -> EpochResult:
    """All epochs over `examples` (shuffled by `seed`); raises NonFiniteLoss on NaN/inf."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(self.config.epochs):
      shuffled = [examples[j] for j in rng.permutation(len(examples))]
      size = self.config.batch_size
      batches += [shuffled[i:i + size] for i in range(0, len(shuffled), size)]
    # Host copies are placed: the step donates its inputs, and the caller keeps `lora`.
    device_lora = self.backend.shared(jax.tree.map(np.array, lora))
    device_opt = self.backend.shared(jax.tree.map(np.array, opt_state))
    losses, new_shapes, new_shape_seconds = [], 0, 0.0
    key = jax.random.key(seed)
    for index, rows in enumerate(tqdm(batches, desc='train', unit='batch', leave=False,
                                      disable=not self.show_progress)):
      start = time.perf_counter()
      learning_rate = self.config.learning_rate * (1 - index / len(batches))
      extras = self.backend.shared((jax.random.key_data(jax.random.fold_in(key, index)),
                                    np.float32(learning_rate)))
      batch = self._device_batch(rows)
      device_lora, device_opt, loss = self._step(
          device_lora, device_opt, self.device_base, batch, extras)
      loss = float(self.backend.fetch_shared(loss))
      if not math.isfinite(loss):
        raise NonFiniteLoss(f'loss became {loss} at step {index + 1}')
      losses.append(loss)
      if batch.inputs.shape not in self.shapes_seen:
        self.shapes_seen.add(batch.inputs.shape)
        new_shapes += 1
        new_shape_seconds += time.perf_counter() - start
    fetch = lambda tree: jax.tree.map(jnp.asarray, self.backend.fetch_shared(tree))
    return EpochResult(fetch(device_lora), fetch(device_opt), losses, new_shapes,
                       new_shape_seconds)

  def _device_batch(self, rows: Sequence[Example]):
    """`Rows` of one global batch, [accum, shards x rows per micro-batch, W] each, placed
    on the backend's shards: packed, one row per (micro-batch, shard) holding its `micro`
    examples; unpacked, `micro` rows of one example each (short batches padded with
    weightless rows)."""
    shards = self.backend.data_size
    slots = self.accum * shards
    if self.config.pack:
      per_slot = max(1, -(-len(rows) // slots))
      longest = max(sum(example_lengths(rows[s * per_slot:(s + 1) * per_slot]))
                    for s in range(slots))
      width = parallel.round_up(max(longest, 1), self.config.pack_multiple)
      arrays = pack_arrays(rows, slots, width, self.config.completion_only, self.pad_id)
    else:
      width = parallel.length_bucket(max(example_lengths(rows)), self.config.length_multiple)
      arrays = batch_arrays(rows, slots * self.micro, width, self.config.completion_only,
                            self.pad_id)
    arrays = Rows(*(a.reshape(self.accum, -1, width) for a in arrays))
    return self.backend.rows(arrays, axis=1)
