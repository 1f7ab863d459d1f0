"""A batched, jitted decode loop: one device-side `lax.while_loop` for a whole batch.

`generate` is a pure function of arrays: it prefills the left-padded prompts into a
fresh cache, then samples until every row has emitted a stop token or the budget is
spent. Nothing returns to the host between tokens, the cache is a loop carry (updated
in place by XLA), and a shared prefix is attended from its own cache (`PrefixCache`),
so a few-shot header is prefilled once per run, not once per row. Host-side text
handling (tokenising, padding, decoding) lives in `generation.py`.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from inversion_jax import model as model_lib


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to pick tokens. temperature 0 means greedy; top_k/top_p apply when sampling."""

  temperature: float = 0.0
  max_new_tokens: int = 100
  top_k: int | None = None
  top_p: float | None = None

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f'temperature must be >= 0, got {self.temperature}')
    if self.max_new_tokens < 1:
      raise ValueError(f'max_new_tokens must be >= 1, got {self.max_new_tokens}')
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise ValueError(f'top_p must be in (0, 1], got {self.top_p}')


class DecodeState(NamedTuple):
  """The decode loop's carry.

  step: index of the next output column; token: [B] last chosen tokens; out: [B, max_new]
  tokens so far; done: [B] rows that stopped; lengths: [B] tokens before the stop;
  cache: the row caches; key: PRNG key; seen: [B] rows that produced visible text.
  """

  step: jax.Array
  token: jax.Array
  out: jax.Array
  done: jax.Array
  lengths: jax.Array
  cache: tuple
  key: jax.Array
  seen: jax.Array


class Generation(NamedTuple):
  """Output of `generate`: tokens [B, max_new] (pad after a stop) and lengths [B].

  `lengths[b]` counts the tokens before the first stop token (the stop token is excluded).
  """

  tokens: jax.Array
  lengths: jax.Array


def pick_tokens(logits, key, sampling: SamplingConfig):
  """Chooses one token per row from float32 logits [B, V]."""
  if sampling.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_k is not None:
    kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if sampling.top_p is not None:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    cumulative = jnp.cumsum(sorted_probs, axis=-1)
    # Keep the smallest set whose mass reaches top_p: the cut-off is the first logit at
    # which the mass before it already reaches top_p.
    cutoff_index = jnp.sum(cumulative - sorted_probs < sampling.top_p, -1)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_index[:, None] - 1, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


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
             prefix=None, sampling: SamplingConfig, pad_id: int) -> Generation:
  """Samples continuations of left-padded prompts.

  Args:
    prompt_tokens: [B, Tp] int32, left-padded; every row's last slot is a real token.
    key_start: [B] int32, first real slot of each row (the number of pad slots).
    key: PRNG key (unused when greedy).
    stop_mask: [V] bool, tokens that end a row (EOS, tokens containing a newline, ...).
    content_mask: optional [V] bool, tokens with visible text. When given, a stop token
      ends a row only after the row has produced visible text, so leading blank lines
      are skipped the way the original's `strip()` then "first line" skipped them.
    prefix: optional `PrefixCache` shared by all rows, attended before the prompt.
    sampling: static sampling settings.
    pad_id: written after a row has stopped.
  """
  config = model_lib.model_config(graphdef, state)
  batch, prompt_len = prompt_tokens.shape
  max_new = sampling.max_new_tokens
  offset = 0 if prefix is None else prefix.length
  cache = model_lib.init_cache(config, batch, prompt_len + max_new)
  slots = jnp.arange(prompt_len)[None]
  positions = jnp.maximum(offset + slots - key_start[:, None], 0)
  logits, cache, _ = model_lib.forward(graphdef, state, prompt_tokens, positions, key_start, cache,
                                    0, prefix, last_only=True)
  key, first_key = jax.random.split(key)
  if content_mask is None:
    content_mask = jnp.ones_like(stop_mask)
  token = pick_tokens(logits[:, -1], first_key, sampling)
  done = stop_mask[token] & content_mask[token]  # A stop token with text (e.g. 'a\n').
  seen = content_mask[token]
  out = jnp.full((batch, max_new), pad_id, jnp.int32).at[:, 0].set(token)
  lengths = jnp.where(done, 0, 1).astype(jnp.int32)

  def keep_going(carry: DecodeState):
    return (carry.step < max_new) & ~jnp.all(carry.done)

  def decode_one(carry: DecodeState) -> DecodeState:
    # The token chosen at step-1 sits in slot prompt_len + step - 1.
    write_index = prompt_len + carry.step - 1
    positions = (offset + write_index - key_start)[:, None]
    logits, cache, _ = model_lib.forward(graphdef, state, carry.token[:, None], positions,
                                         key_start, carry.cache, write_index, prefix)
    key, step_key = jax.random.split(carry.key)
    new = pick_tokens(logits[:, -1], step_key, sampling)
    new = jnp.where(carry.done, pad_id, new)
    out = jax.lax.dynamic_update_slice_in_dim(carry.out, new[:, None], carry.step, axis=1)
    stopped = carry.done | (stop_mask[new] & (carry.seen | content_mask[new]))
    return DecodeState(step=carry.step + 1, token=new, out=out, done=stopped,
                       lengths=carry.lengths + (~stopped).astype(jnp.int32), cache=cache,
                       key=key, seen=carry.seen | content_mask[new])

  final = jax.lax.while_loop(keep_going, decode_one, DecodeState(
      jnp.int32(1), token, out, done, lengths, cache, key, seen))
  out, lengths = final.out, final.lengths
  out = jnp.where(jnp.arange(max_new)[None] < lengths[:, None], out, pad_id)
  return Generation(out, lengths)


@functools.partial(jax.jit, static_argnames=('graphdef', 'last_only'))
def jit_forward(graphdef, state, tokens, positions, key_start, prefix=None, last_only=True):
  """Cache-free jitted forward (scoring prompts, judge digit distributions)."""
  return model_lib.forward(graphdef, state, tokens, positions, key_start, prefix=prefix,
                           last_only=last_only)[0]


jit_generate = jax.jit(generate, static_argnames=('graphdef', 'sampling', 'pad_id'))
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
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  kth = jax.lax.top_k(logits, k)[0][..., -1]
  hit = target_logit >= kth
  mask = jnp.arange(1, tokens.shape[1])[None] >= target_start[:, None]
  return jnp.sum(hit & mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1)


jit_pooled_hidden = jax.jit(pooled_hidden, static_argnames=('graphdef', 'layer'))
jit_token_fidelity = jax.jit(token_fidelity, static_argnames=('graphdef', 'layer', 'k'))
