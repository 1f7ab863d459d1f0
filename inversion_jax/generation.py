"""Text in, text out: tokenises prompts, pads them to shape buckets, runs the jitted sampler.

A prompt is a `(prefix, suffix)` pair. Rows sharing a prefix (a few-shot header) are
decoded together against ONE prefilled prefix cache, memoised per generator; suffixes
are left-padded to a multiple of `length_multiple` and the batch to a multiple of
`batch_multiple` (times the device count), so a run compiles a handful of shapes, not
one per call. With several local devices the batch is split over them with `jax.pmap`.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from inversion_jax import model as model_lib
from inversion_jax import parallel
from inversion_jax import sampling as sampling_lib
from inversion_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Completions:
  """Decoded continuations, one per prompt, with their token counts."""

  texts: list[str]
  num_tokens: list[int]


@dataclasses.dataclass
class _Batch:
  tokens: np.ndarray  # [B, Tp] left-padded
  key_start: np.ndarray  # [B]
  num_rows: int  # Real rows; the rest are padding copies.


class Generator:
  """Generates text for many prompts with one model state."""

  def __init__(self, graphdef, state, tokenizer, *, stop_strings=('\n',), num_devices=1,
               max_batch=64, batch_multiple=8, length_multiple=16, add_bos=True,
               show_progress=True):
    self.graphdef, self.state, self.tokenizer = graphdef, state, tokenizer
    self.config = model_lib.model_config(graphdef, state)
    self.stop_strings = tuple(stop_strings)
    self.num_devices = num_devices
    self.max_batch = parallel.round_up(max_batch, batch_multiple * num_devices)
    self.batch_multiple = batch_multiple * num_devices
    self.length_multiple = length_multiple
    self.add_bos = add_bos and tokenizer.bos_id is not None
    self.show_progress = show_progress
    self._prefix_caches = {}
    self._device_state = parallel.replicate(state, num_devices) if num_devices > 1 else state
    self.stop_mask, self.content_mask = (jnp.asarray(m) for m in self._token_masks())

  def with_state(self, state) -> 'Generator':
    """The same generator for new weights (e.g. after training); prefix caches are redone."""
    clone = object.__new__(Generator)
    clone.__dict__.update(self.__dict__)
    clone.state, clone._prefix_caches = state, {}
    clone._device_state = (parallel.replicate(state, self.num_devices)
                           if self.num_devices > 1 else state)
    return clone

  def _token_masks(self) -> tuple[np.ndarray, np.ndarray]:
    """(stop, content) masks over the vocab: tokens holding a stop string / visible text.

    EOS counts as content so that it ends a row even before any text.
    """
    stop = np.zeros((self.config.vocab_size,), bool)
    content = np.zeros((self.config.vocab_size,), bool)
    for index, text in enumerate(self.tokenizer.token_texts()[: self.config.vocab_size]):
      stop[index] = any(s in text for s in self.stop_strings)
      content[index] = bool(text.strip())
    eos = list(self.tokenizer.eos_ids)
    stop[eos], content[eos] = True, True
    return stop, content

  def generate(self, prompts: Sequence, sampling: sampling_lib.SamplingConfig,
               seed: int = 0, desc: str = 'generate') -> Completions:
    """Continues each prompt; output text is cut at the first stop string."""
    prompts = [_as_pair(p) for p in prompts]
    texts, counts = [None] * len(prompts), [0] * len(prompts)
    key = jax.random.key(seed)
    chunks = list(self._chunks(prompts))
    bar = tqdm(total=len(prompts), desc=desc, unit='row', disable=not self.show_progress,
               leave=False)
    for chunk_index, (prefix, rows) in enumerate(chunks):
      suffixes = [prompts[i][1] for i in rows]
      gen = self._generate_rows(prefix, suffixes, sampling, jax.random.fold_in(key, chunk_index))
      for row, tokens, length in zip(rows, gen.tokens, gen.lengths):
        texts[row] = self._cut_at_stop(self.tokenizer.decode(tokens[:length].tolist()))
        counts[row] = int(length)
      bar.update(len(rows))
    bar.close()
    return Completions(texts, counts)

  def last_token_logits(self, prompts: Sequence) -> np.ndarray:
    """float32 [len(prompts), V] logits of the token that would follow each prompt."""
    prompts = [_as_pair(p) for p in prompts]
    out = np.zeros((len(prompts), self.config.vocab_size), np.float32)
    for prefix, rows in self._chunks(prompts):
      batch = self._pad_rows([prompts[i][1] for i in rows], prefix, max_new=0)
      logits = self._forward_last(prefix, batch)
      out[rows] = logits[: batch.num_rows]
    return out

  def _chunks(self, prompts):
    """(prefix, row indices) groups of at most max_batch rows sharing a prefix."""
    by_prefix: dict[str, list[int]] = {}
    for index, (prefix, _) in enumerate(prompts):
      by_prefix.setdefault(prefix, []).append(index)
    for prefix, rows in by_prefix.items():
      for start in range(0, len(rows), self.max_batch):
        yield prefix, rows[start:start + self.max_batch]

  def _cut_at_stop(self, text: str) -> str:
    """Leading blank space is dropped (rows stop only after visible text), then cut."""
    text = text.lstrip()
    for stop in self.stop_strings:
      if stop in text:
        text = text[: text.index(stop)]
    return text

  def prefix_tokens(self, prefix: str) -> list[int]:
    tokens = self.tokenizer.encode(prefix) if prefix else []
    return ([self.tokenizer.bos_id] if self.add_bos else []) + tokens

  def _prefix_cache(self, prefix: str):
    if prefix not in self._prefix_caches:
      tokens = self.prefix_tokens(prefix)
      cache = None
      if tokens:
        cache = sampling_lib.jit_prefill_prefix(self.graphdef, self.state,
                                                jnp.asarray(tokens, jnp.int32))
        if self.num_devices > 1:
          cache = parallel.replicate(cache, self.num_devices)
      self._prefix_caches[prefix] = (len(tokens), cache)
    return self._prefix_caches[prefix]

  def _pad_rows(self, suffixes, prefix, max_new) -> _Batch:
    prefix_len, _ = self._prefix_cache(prefix)
    rows = [self.tokenizer.encode(s) for s in suffixes]
    if not prefix_len:  # Without a prefix the BOS token starts each row.
      rows = [([self.tokenizer.bos_id] if self.add_bos else []) + r for r in rows]
    longest = max(len(r) for r in rows)
    if prefix_len + longest + max_new > self.config.max_seq_len:
      raise UserError(
          f'a prompt of {prefix_len + longest} tokens plus {max_new} new tokens exceeds the '
          f"model's context of {self.config.max_seq_len} tokens; shorten the prompt or lower "
          'max_new_tokens')
    if longest == 0:
      raise UserError('a prompt is empty; give the model some text to continue')
    width = parallel.length_bucket(longest, self.length_multiple)
    height = parallel.round_up(len(rows), self.batch_multiple)
    rows = rows + [rows[0]] * (height - len(rows))
    tokens = np.full((height, width), self.tokenizer.pad_id, np.int32)
    key_start = np.zeros((height,), np.int32)
    for index, row in enumerate(rows):
      tokens[index, width - len(row):] = row
      key_start[index] = width - len(row)
    return _Batch(tokens, key_start, len(suffixes))

  def _generate_rows(self, prefix, suffixes, sampling, key) -> sampling_lib.Generation:
    batch = self._pad_rows(suffixes, prefix, sampling.max_new_tokens)
    _, cache = self._prefix_cache(prefix)
    pad_id = int(self.tokenizer.pad_id)
    if self.num_devices == 1:
      gen = sampling_lib.jit_generate(
          self.graphdef, self.state, batch.tokens, batch.key_start, key, self.stop_mask,
          self.content_mask, prefix=cache, sampling=sampling, pad_id=pad_id)
    else:
      fn = _pmapped_generate(self.graphdef, sampling, pad_id)
      keys = jax.random.split(key, self.num_devices)
      tokens, key_start = parallel.shard((batch.tokens, batch.key_start), self.num_devices)
      gen = parallel.unshard(fn(self._device_state, tokens, key_start, keys, self.stop_mask,
                                self.content_mask, cache))
    tokens, lengths = np.asarray(gen.tokens), np.asarray(gen.lengths)
    return sampling_lib.Generation(tokens[: batch.num_rows], lengths[: batch.num_rows])

  def _forward_last(self, prefix, batch: _Batch) -> np.ndarray:
    prefix_len, cache = self._prefix_cache(prefix)
    positions = np.maximum(
        prefix_len + np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None], 0)
    if self.num_devices == 1:
      logits = sampling_lib.jit_forward(self.graphdef, self.state, batch.tokens, positions,
                                        batch.key_start, cache)
    else:
      fn = _pmapped_forward(self.graphdef)
      args = parallel.shard((batch.tokens, positions, batch.key_start), self.num_devices)
      logits = parallel.unshard(fn(self._device_state, *args, cache))
    return np.asarray(logits)[:, -1]


def _as_pair(prompt) -> tuple[str, str]:
  """Accepts `prompts.Prompt` objects or (prefix, suffix) tuples."""
  return (prompt.prefix, prompt.suffix) if hasattr(prompt, 'prefix') else tuple(prompt)


@functools.lru_cache(maxsize=16)
def _pmapped_generate(graphdef, sampling, pad_id):
  def run(state, tokens, key_start, key, stop_mask, content_mask, prefix):
    return sampling_lib.generate(graphdef, state, tokens, key_start, key, stop_mask,
                                 content_mask, prefix=prefix, sampling=sampling, pad_id=pad_id)

  return jax.pmap(run, axis_name=parallel.AXIS, in_axes=(0, 0, 0, 0, None, None, 0))


@functools.lru_cache(maxsize=4)
def _pmapped_forward(graphdef):
  def run(state, tokens, positions, key_start, prefix):
    return model_lib.forward(graphdef, state, tokens, positions, key_start, prefix=prefix,
                             last_only=True)[0]

  return jax.pmap(run, axis_name=parallel.AXIS)
