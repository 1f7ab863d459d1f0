"""A batched, jitted decode loop: device-side `lax.while_loop`s over a whole batch.

`generate` is a pure function of arrays: `prefill` runs the left-padded prompts into a
fresh cache and picks the first tokens, `decode` samples until every row has emitted a
stop token or a step bound is reached, `finish` pads after each row's stop. Nothing
returns to the host between tokens inside `decode`, the cache is a loop carry (updated
in place by XLA), and a shared prefix is attended from its own cache (`PrefixCache`),
so a few-shot header is prefilled once per run, not once per row. Every row samples
with its own key (`fold_in(row_key, step)`), so `take_rows` can drop finished rows (and
add empty cache slots) between `decode` calls without changing any row's tokens:
`compaction.py` uses that to shrink a batch whose rows have mostly stopped. A call's static
settings travel as one `DecodeSpec`.
"""

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from inversion_jax.nn import model as model_lib


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to pick tokens. temperature 0 means greedy; top_k/top_p apply when sampling.

  stop_at_newline: a row ends at its first newline after visible text (fast, our default);
  False ends it only at EOS or the budget, as the original's `generate` did (the caller
  keeps the first line).
  """

  temperature: float = 0.0
  max_new_tokens: int = 100
  top_k: int | None = None
  top_p: float | None = None
  stop_at_newline: bool = True

  def __post_init__(self):
    if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
            and self.temperature >= 0):  # NaN passes a plain `< 0` test.
      raise ValueError(f'temperature must be a finite number >= 0, got {self.temperature}')
    if self.max_new_tokens < 1:
      raise ValueError(f'max_new_tokens must be >= 1, got {self.max_new_tokens}')
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise ValueError(f'top_p must be in (0, 1], got {self.top_p}')
    if self.top_k is not None and self.top_k < 1:
      raise ValueError(f'top_k must be >= 1, got {self.top_k}')


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """A decode call's static settings in one hashable value (a compiled program per value).

  sampling: how tokens are picked, and the budget. pad_id: written after a row stops.
  prompt_slots: the prompts' width in the cache (None: their own width); prompts prefilled
  at a fine width share the decode program, and cache, of a coarse one. generated_slots:
  empty slots after the prompts in a fresh carry (None: the whole budget); `decode` stops
  where they run out and `take_rows` adds more. batch: a fresh carry's rows (None: the
  prompts' rows; more when a wave is prefilled in parts).
  """

  sampling: SamplingConfig
  pad_id: int
  prompt_slots: int | None = None
  generated_slots: int | None = None
  batch: int | None = None


class DecodeState(NamedTuple):
  """The decode loop's carry.

  step: index of the next output column (shared: rows start together); token: [B] last
  chosen tokens; out: [B, max_new] tokens so far; done: [B] rows that stopped; lengths:
  [B] tokens before the stop; cache: the row caches; key: [B] per-row PRNG keys (step t
  draws with fold_in(key, t)); seen: [B] rows that produced visible text; key_start: [B]
  each row's first real cache slot.
  """

  step: jax.Array
  token: jax.Array
  out: jax.Array
  done: jax.Array
  lengths: jax.Array
  cache: tuple
  key: jax.Array
  seen: jax.Array
  key_start: jax.Array


class Generation(NamedTuple):
  """Output of `generate`: tokens [B, max_new] (pad after a stop) and lengths [B].

  `lengths[b]` counts the tokens before the first stop token (the stop token is excluded).
  """

  tokens: jax.Array
  lengths: jax.Array


def row_keys(key, batch: int):
  """Per-row PRNG keys [B] from one key: row b gets fold_in(key, b)."""
  return jax.vmap(lambda index: jax.random.fold_in(key, index))(jnp.arange(batch))


def pick_tokens(logits, keys, sampling: SamplingConfig):
  """Chooses one token per row from float32 logits [B, V].

  `keys` is one PRNG key per row ([B]); a single key is split into per-row keys. Each
  row's draw depends only on its own key, so a row samples the same token whatever else
  is in its batch.
  """
  if sampling.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if jnp.ndim(keys) == 0:
    keys = row_keys(keys, logits.shape[0])
  logits = logits / sampling.temperature
  if sampling.top_k is not None and sampling.top_k < logits.shape[-1]:
    kth = kth_largest(logits, sampling.top_k)[:, None]
    logits = jnp.where(logits < kth, -jnp.inf, logits)  # Ties with the k-th stay, as in HF.
  if sampling.top_p is not None:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    cumulative = jnp.cumsum(sorted_probs, axis=-1)
    # Keep the smallest set whose mass reaches top_p: the cut-off is the first logit at
    # which the mass before it already reaches top_p.
    cutoff_index = jnp.sum(cumulative - sorted_probs < sampling.top_p, -1)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_index[:, None] - 1, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return sample_categorical(logits, keys)


CDF_CHUNK = 256


def sample_categorical(logits, keys, chunk: int = CDF_CHUNK):
  """[B] draws from softmax(logits) by inverting the CDF: one uniform per row.

  `jax.random.categorical` adds Gumbel noise to every logit: 49k threefry draws per row
  and step, 51 ms of a ~190 ms decode step at batch 64 on a 2-core CPU (BUILD_NOTES "Sampling,
  prefill widths and waves"). Here u ~ U(0, total mass) picks the first token whose cumulative
  mass exceeds u, in two stages (the chunk, then the token inside it) so every cumulative
  sum is short and exact to float32 rounding. A token of zero mass (masked by top-k or
  top-p, or underflowed) is never picked: its cumulative mass equals its predecessor's.
  """
  batch, vocab = logits.shape
  chunks = -(-vocab // chunk)
  weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  if chunks * chunk != vocab:
    weights = jnp.pad(weights, ((0, 0), (0, chunks * chunk - vocab)))
  weights = weights.reshape(batch, chunks, chunk)
  mass = jnp.sum(weights, axis=-1)  # [B, chunks]
  cumulative = jnp.cumsum(mass, axis=-1)
  u = jax.vmap(lambda key: jax.random.uniform(key, ()))(keys) * cumulative[:, -1]
  last_with_mass = lambda m: m.shape[-1] - 1 - jnp.argmax((m > 0)[:, ::-1], axis=-1)
  # Rounding can put u at or past the total: the last chunk / token with mass then.
  index = jnp.minimum(jnp.sum(cumulative <= u[:, None], -1), last_with_mass(mass))
  pick = lambda x: jnp.take_along_axis(x, index[:, None], axis=1)[:, 0]
  rest = jnp.maximum(u - (pick(cumulative) - pick(mass)), 0.0)  # u's place in the chunk.
  row = jnp.take_along_axis(weights, index[:, None, None], axis=1)[:, 0]  # [B, chunk]
  inner = jnp.minimum(jnp.sum(jnp.cumsum(row, axis=-1) <= rest[:, None], -1),
                      last_with_mass(row))
  return (index * chunk + inner).astype(jnp.int32)


TOP_K_CHUNK = 16384


def kth_largest(logits, k: int):
  """[B] k-th largest value of each row of [B, V], exactly, in two stages.

  XLA:CPU's `lax.top_k` over a whole 49k vocabulary takes ~1.6 s for 64 rows, but ~30 ms
  on chunks of <= 16k (BUILD_NOTES, Gotchas): the top k of each chunk, then the top k of
  those candidates. Exact, because a chunk can hold at most k of the row's top k.
  """
  batch, vocab = logits.shape
  chunks = -(-vocab // TOP_K_CHUNK)
  width = -(-vocab // chunks)
  if chunks == 1 or width < k:
    return jax.lax.top_k(logits, k)[0][:, -1]
  padded = jnp.pad(logits, ((0, 0), (0, chunks * width - vocab)), constant_values=-jnp.inf)
  candidates = jax.lax.top_k(padded.reshape(batch, chunks, width), k)[0]
  return jax.lax.top_k(candidates.reshape(batch, chunks * k), k)[0][:, -1]


def _step_keys(keys, step):
  return jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)


def prefill_prefix(graphdef, state, prefix_tokens) -> model_lib.PrefixCache:
  """Runs a shared prefix [P] once and keeps its keys and values (no batch axis)."""
  config = model_lib.model_config(graphdef, state)
  length = prefix_tokens.shape[0]
  cache = model_lib.init_cache(config, 1, length)
  positions = jnp.arange(length)[None]
  _, cache, _ = model_lib.forward(graphdef, state, prefix_tokens[None], positions, cache=cache,
                               last_only=True)
  return model_lib.PrefixCache(tuple(model_lib.LayerCache(c.k[0], c.v[0]) for c in cache))


def generate(graphdef, state, prompt_tokens, key_start, key, stop_mask, content_mask=None, *,
             prefix=None, spec: DecodeSpec) -> Generation:
  """Samples continuations of left-padded prompts in one device call.

  Args:
    prompt_tokens: [B, Tp] int32, left-padded; every row's last slot is a real token.
    key_start: [B] int32, first real slot of each row (the number of pad slots).
    key: per-row PRNG keys [B], or one key (row b then uses fold_in(key, b)); unused
      when greedy. A row's tokens depend only on its prompt and its key.
    stop_mask: [V] bool, tokens that end a row (EOS, tokens containing a newline, ...).
    content_mask: optional [V] bool, tokens with visible text. When given, a stop token
      ends a row only after the row has produced visible text, so leading blank lines
      are skipped the way the original's `strip()` then "first line" skipped them.
    prefix: optional `PrefixCache` shared by all rows, attended before the prompt.
    spec: static settings (`DecodeSpec`; its `prompt_slots` >= Tp, see `prefill`).
  """
  carry = prefill(graphdef, state, prompt_tokens, key_start, key, stop_mask, content_mask,
                  prefix=prefix, spec=spec)
  spec = dataclasses.replace(spec, prompt_slots=spec.prompt_slots or prompt_tokens.shape[1])
  carry = decode(graphdef, state, carry, stop_mask, content_mask, prefix=prefix, spec=spec,
                 until=spec.sampling.max_new_tokens)
  return finish(carry, spec.pad_id)


def prefill(graphdef, state, prompt_tokens, key_start, key, stop_mask, content_mask=None, *,
            prefix=None, spec: DecodeSpec, carry: DecodeState | None = None,
            row=0) -> DecodeState:
  """Runs the prompts and picks each row's first token; returns the decode carry.

  The prompts attend only to each other (a [Tp, Tp] block, not the whole cache), and
  their keys and values are then written at the end of `spec.prompt_slots` (default Tp)
  slots, before the empty ones: prompts padded to a fine width (little wasted prefill)
  share a decode program, and its cache, with any width up to `prompt_slots` (one compiled
  decode loop per coarse width).

  A wave of rows is prefilled in parts: `carry` (donate it) receives this part's rows
  at row `row`, in place (pass the `prompt_slots` it was made with); without one a
  blank carry of `spec.batch` (default B) rows is made, with `spec.generated_slots`
  (default max_new_tokens) empty slots after the prompts, so early steps, when most rows
  are still going, read a short cache.
  """
  config = model_lib.model_config(graphdef, state)
  rows, prompt_len = prompt_tokens.shape
  sampling, pad_id = spec.sampling, spec.pad_id
  max_new = sampling.max_new_tokens
  prompt_slots = spec.prompt_slots or prompt_len
  if carry is None:
    carry = blank_state(config, spec.batch or rows, prompt_slots,
                        spec.generated_slots or max_new, pad_id, max_new=max_new)
  shift = prompt_slots - prompt_len
  if shift < 0:
    raise ValueError(f'prompt_slots {prompt_slots} < prompt width {prompt_len}')
  offset = 0 if prefix is None else prefix.length
  slots = jnp.arange(prompt_len)[None]
  positions = jnp.maximum(offset + slots - key_start[:, None], 0)
  logits, cache, _ = model_lib.forward(
      graphdef, state, prompt_tokens, positions, key_start,
      model_lib.init_cache(config, rows, prompt_len), 0, prefix, last_only=True)
  keys = row_keys(key, rows) if jnp.ndim(key) == 0 else key
  if content_mask is None:
    content_mask = jnp.ones_like(stop_mask)
  token = pick_tokens(logits[:, -1], _step_keys(keys, 0), sampling)
  done = stop_mask[token] & content_mask[token]  # A stop token with text (e.g. 'a\n').
  out = jnp.full((rows, max_new), pad_id, jnp.int32).at[:, 0].set(token)
  lengths = jnp.where(done, 0, 1).astype(jnp.int32)
  put = lambda whole, part, *at: jax.lax.dynamic_update_slice(
      whole, part, (row, *at, *[0] * (whole.ndim - 1 - len(at))))
  layers = tuple(model_lib.LayerCache(  # k [B, K, H, S], v [B, K, S, H].
      put(whole.k, part.k, 0, 0, shift), put(whole.v, part.v, 0, shift))
      for whole, part in zip(carry.cache, cache))
  return carry._replace(
      token=put(carry.token, token), out=put(carry.out, out), done=put(carry.done, done),
      lengths=put(carry.lengths, lengths), cache=layers, key=put(carry.key, keys),
      seen=put(carry.seen, content_mask[token]), key_start=put(carry.key_start, key_start + shift))


def blank_state(config, batch: int, prompt_slots: int, generated_slots: int, pad_id: int, *,
                max_new: int) -> DecodeState:
  """A decode carry of `batch` rows to be filled by `prefill` parts (keys are dummies)."""
  zeros = lambda dtype: jnp.zeros((batch,), dtype)
  return DecodeState(
      step=jnp.int32(1), token=zeros(jnp.int32), out=jnp.full((batch, max_new), pad_id, jnp.int32),
      done=zeros(bool), lengths=zeros(jnp.int32),
      cache=model_lib.init_cache(config, batch, prompt_slots + generated_slots),
      key=row_keys(jax.random.key(0), batch), seen=zeros(bool), key_start=zeros(jnp.int32))


def decode(graphdef, state, carry: DecodeState, stop_mask, content_mask=None, *,
           prefix=None, spec: DecodeSpec, until) -> DecodeState:
  """Decodes while some row is unfinished and `carry.step < until` (<= max_new_tokens),
  and while the cache has an empty slot after its `spec.prompt_slots` prompt slots."""
  sampling, pad_id, prompt_slots = spec.sampling, spec.pad_id, spec.prompt_slots
  max_new = sampling.max_new_tokens
  offset = 0 if prefix is None else prefix.length
  if content_mask is None:
    content_mask = jnp.ones_like(stop_mask)
  # Step t writes slot prompt_slots + t - 1: a cache of G generated slots holds steps <= G.
  until = jnp.minimum(until, min(max_new, carry.cache[0].k.shape[-1] - prompt_slots + 1))

  def keep_going(carry: DecodeState):
    return (carry.step < until) & ~jnp.all(carry.done)

  def decode_one(carry: DecodeState) -> DecodeState:
    # The token chosen at step-1 sits in slot prompt_slots + step - 1.
    write_index = prompt_slots + carry.step - 1
    positions = (offset + write_index - carry.key_start)[:, None]
    logits, cache, _ = model_lib.forward(graphdef, state, carry.token[:, None], positions,
                                         carry.key_start, carry.cache, write_index, prefix)
    new = pick_tokens(logits[:, -1], _step_keys(carry.key, carry.step), sampling)
    new = jnp.where(carry.done, pad_id, new)
    out = jax.lax.dynamic_update_slice_in_dim(carry.out, new[:, None], carry.step, axis=1)
    stopped = carry.done | (stop_mask[new] & (carry.seen | content_mask[new]))
    return carry._replace(step=carry.step + 1, token=new, out=out, done=stopped,
                          lengths=carry.lengths + (~stopped).astype(jnp.int32), cache=cache,
                          seen=carry.seen | content_mask[new])

  return jax.lax.while_loop(keep_going, decode_one, carry)


def finish(carry: DecodeState, pad_id: int) -> Generation:
  """Tokens after each row's stop become padding."""
  width = carry.out.shape[1]
  out = jnp.where(jnp.arange(width)[None] < carry.lengths[:, None], carry.out, pad_id)
  return Generation(out, carry.lengths)


def take_rows(carry: DecodeState, rows, extra_slots: int = 0) -> DecodeState:
  """The carry of the given rows only (a smaller batch, same step), its cache grown by
  `extra_slots` empty slots (static) in the same copy."""
  step = carry.step
  carry = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), carry._replace(step=None))
  if extra_slots:  # k [B, K, H, S], v [B, K, S, H].
    pad = lambda x, axis: jnp.pad(x, [(0, extra_slots if a == axis else 0) for a in range(4)])
    carry = carry._replace(cache=tuple(model_lib.LayerCache(pad(c.k, 3), pad(c.v, 2))
                                       for c in carry.cache))
  return carry._replace(step=step)


@functools.partial(jax.jit, static_argnames=('graphdef', 'last_only'))
def jit_forward(graphdef, state, tokens, positions, key_start, prefix=None, last_only=True):
  """Cache-free jitted forward (scoring prompts, judge digit distributions)."""
  return model_lib.forward(graphdef, state, tokens, positions, key_start, prefix=prefix,
                           last_only=last_only)[0]


jit_generate = jax.jit(generate, static_argnames=('graphdef', 'spec'))
jit_prefill_prefix = jax.jit(prefill_prefix, static_argnames=('graphdef',))


def pooled_hidden(graphdef, state, tokens, positions, key_start, pool_start, *, layer: int):
  """Mean of layer `layer`'s hidden states over each row's slots >= pool_start: [B, D]."""
  hidden = model_lib.forward(graphdef, state, tokens, positions, key_start,
                             hidden_layers=(layer,)).hidden_states[0].astype(jnp.float32)
  mask = jnp.arange(tokens.shape[1])[None] >= pool_start[:, None]
  total = jnp.einsum('btd,bt->bd', hidden, mask.astype(jnp.float32))
  return total / jnp.maximum(mask.sum(-1), 1)[:, None]


def token_fidelity(graphdef, state, tokens, positions, key_start, target_start, prefix=None, *,
                   layer: int, k: int):
  """Per row, the fraction of tokens at slots >= target_start that the logit lens ranks top-k.

  The lens is the model's final norm + LM head applied to layer `layer`'s hidden state one
  position before each token (at the last layer it is the model's own next-token logits).
  """
  hidden = model_lib.forward(graphdef, state, tokens, positions, key_start, prefix=prefix,
                             hidden_layers=(layer,)).hidden_states[0]
  logits = model_lib.lm_head(graphdef, state, hidden[:, :-1])  # Predicts slots 1..T-1.
  targets = tokens[:, 1:]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)
  # In the top k <=> fewer than k logits beat it: a count, not a sort over the vocabulary.
  hit = jnp.sum(logits > target_logit, axis=-1) < k
  mask = jnp.arange(1, tokens.shape[1])[None] >= target_start[:, None]
  return jnp.sum(hit & mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1)
