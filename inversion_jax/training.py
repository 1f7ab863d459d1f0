"""LoRA fine-tuning: examples to padded batches, a pure train step, one epoch.

The loss is cross-entropy summed over real target tokens only (the original also
trained on padding: we do not), optionally only over the command tokens. The step
returns loss and gradient SUMS plus the token count of the rows it sees; the backend
adds them over devices (`parallel`), and one division gives exactly the single-device,
token-weighted mean, whatever the split. Gradient accumulation scans over micro-batches
inside the step, so a global batch that does not fit one device at once is still one
optimizer update.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from inversion_jax import model as model_lib
from inversion_jax import parallel


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The original's defaults: AdamW lr 2e-4, batch 4, one epoch, linear decay to 0."""

  learning_rate: float = 2e-4
  batch_size: int = 4
  epochs: int = 1
  weight_decay: float = 0.0
  completion_only: bool = False  # True: loss on the command tokens only.
  micro_batch_size: int | None = None  # Rows per device per pass; None = all at once.
  length_multiple: int = 16
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


def batch_arrays(examples: Sequence[Example], rows: int, width: int, completion_only: bool,
                 pad_id: int):
  """Right-padded inputs, targets and loss weights, [rows, width] each.

  Row i's sequence s (prompt + completion) gives inputs s[:-1] and targets s[1:]; the
  weight of a target is 1 where it is a real token (and, with completion_only, a
  completion token). Rows beyond len(examples) are all padding with weight 0.
  """
  inputs = np.full((rows, width), pad_id, np.int32)
  targets = np.full((rows, width), pad_id, np.int32)
  weights = np.zeros((rows, width), np.float32)
  for i, example in enumerate(examples):
    sequence = np.asarray(example.prompt + example.completion, np.int32)[: width + 1]
    n = len(sequence) - 1
    inputs[i, :n], targets[i, :n] = sequence[:-1], sequence[1:]
    first_target = len(example.prompt) - 1 if completion_only else 0
    weights[i, first_target:n] = 1.0
  return inputs, targets, weights


def loss_sums(lora, base, graphdef, inputs, targets, weights, dropout_keys):
  """(sum of weighted token losses, sum of weights) for one micro-batch.

  `dropout_keys` holds one key per row ([B]) or is None (no dropout). Mixed precision
  like HF's AMP: the adapters are float32 masters, cast to the base weights' dtype for
  the forward pass (a no-op in float32); the loss is float32.
  """
  compute = compute_dtype(base)
  lora = jax.tree.map(lambda x: x.astype(compute), lora)
  positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  logits, _, _ = model_lib.forward(graphdef, (lora, base), inputs, positions,
                                dropout_key=dropout_keys)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
  return jnp.sum(losses * weights), jnp.sum(weights)


def compute_dtype(base):
  """The dtype of the frozen base weights: the forward pass runs in it."""
  return next(x.dtype for x in jax.tree.leaves(base) if jnp.issubdtype(x.dtype, jnp.floating))


def gradient_sums(graphdef, lora, base, batch, extras):
  """(gradient sums, loss sum, token count) over the rows this call sees.

  `batch` = (inputs, targets, weights [accum, rows, T], row ids [accum, rows]); the scan
  over the accumulation axis adds micro-batches. Row r's dropout key is
  fold_in(key, r) for its index r in the global batch, so the sums do not depend on how
  the rows were split over devices or micro-batches. No device axis is named here: the
  backend adds the sums of its shards (`Backend.compile_step`).
  """
  key = jax.random.wrap_key_data(extras[0])
  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def accumulate(carry, micro):
    grads, loss, count = carry
    inputs, targets, weights, row_ids = micro
    keys = jax.vmap(lambda row: jax.random.fold_in(key, row))(row_ids)
    (micro_loss, micro_count), micro_grads = grad_fn(lora, base, graphdef, inputs, targets,
                                                     weights, keys)
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
    losses = []
    key = jax.random.key(seed)
    for index, rows in enumerate(tqdm(batches, desc='train', unit='batch', leave=False,
                                      disable=not self.show_progress)):
      learning_rate = self.config.learning_rate * (1 - index / len(batches))
      extras = self.backend.shared((jax.random.key_data(jax.random.fold_in(key, index)),
                                    np.float32(learning_rate)))
      device_lora, device_opt, loss = self._step(
          device_lora, device_opt, self.device_base, self._device_batch(rows), extras)
      loss = float(self.backend.fetch_shared(loss))
      if not math.isfinite(loss):
        raise NonFiniteLoss(f'loss became {loss} at step {index + 1}')
      losses.append(loss)
    fetch = lambda tree: jax.tree.map(jnp.asarray, self.backend.fetch_shared(tree))
    return EpochResult(fetch(device_lora), fetch(device_opt), losses)

  def _device_batch(self, rows: Sequence[Example]):
    """(inputs, targets, weights, row ids) of one global batch, [accum, shards x micro, ...]
    (short batches padded with weightless rows), rows placed on the backend's shards."""
    longest = max(len(e.prompt) + len(e.completion) - 1 for e in rows)
    width = parallel.length_bucket(longest, self.config.length_multiple)
    per_step = self.backend.data_size * self.micro
    total = self.accum * per_step
    arrays = batch_arrays(rows, total, width, self.config.completion_only, self.pad_id)
    arrays = tuple(a.reshape(self.accum, per_step, width) for a in arrays)
    row_ids = np.arange(total, dtype=np.int32).reshape(self.accum, per_step)
    return self.backend.rows((*arrays, row_ids), axis=1)
