"""Text in, text out: tokenises prompts, pads them to shape buckets, runs the jitted sampler.

A prompt is a `(prefix, suffix)` pair. Rows sharing a prefix (a few-shot header) are
decoded together against ONE prefilled prefix cache, memoised per generator. They are
sorted by length and cut into waves of at most `max_batch` rows; a wave is prefilled in
parts of at most `prefill_rows` rows of similar length (each left-padded to a multiple of
`length_multiple`, the part to a multiple of `batch_multiple` times the data-parallel
shards, cut where padding is least) written into one decode carry, then decoded in one
loop that drops finished rows. Where it runs is the backend's business (`parallel`):
every compiled call goes through `Generator._call`, its inputs through
`backend.rows/shared`.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from inversion_jax import parallel
from inversion_jax.decode import sampling as sampling_lib
from inversion_jax.errors import UserError
from inversion_jax.nn import model as model_lib
from inversion_jax.nn import quantize as quantize_lib


# A wave's prompt slots in the decode cache: coarser than the prefill widths, since each
# width is another compiled decode loop, and finer than powers of two, since every step
# reads every slot (BUILD_NOTES "Sampling, prefill widths and waves").
DECODE_WIDTH_MULTIPLE = 32


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
  prefix_len: int = 0  # Tokens in the shared prefix cache (BOS included).
  cache: object = None  # The shared prefix's cache, or None.


class Generator:
  """Generates text for many prompts with one model state."""

  def __init__(self, graphdef, state, tokenizer, *, stop_strings=('\n',), num_devices=1,
               max_batch=256, batch_multiple=8, length_multiple=8, add_bos=True,
               show_progress=True, compact_every=8, quantize='none', backend=None,
               group_rows=True, prefill_rows=32):
    # The weights as given; `quantize='int8'` runs int8 block projections (quantize.py).
    self.quantize, self._plain_graphdef = quantize_lib.check(quantize), graphdef
    self.backend = backend or parallel.make_backend('pmap', num_devices)
    graphdef, state = quantize_lib.apply(quantize, graphdef, state)
    self.graphdef, self.tokenizer = graphdef, tokenizer
    self.config = model_lib.model_config(graphdef, state)
    self.state = self.backend.params(state)  # The only copy the generator keeps: placed.
    self.stop_strings = tuple(stop_strings)
    shards = self.backend.data_size
    self.max_batch = parallel.round_up(max_batch, batch_multiple * shards)
    self.batch_multiple = batch_multiple * shards
    # Prompts pad to a multiple of 8 tokens: 15 % fewer prefill slots than 16 in a 50 x 3
    # phase, for more compiled prefill shapes (BUILD_NOTES "Prefill parts cut by length").
    self.length_multiple = length_multiple
    self.add_bos = add_bos and tokenizer.bos_id is not None
    self.show_progress = show_progress
    # Decode steps between checks for finished rows; 0 = one device call per batch.
    self.compact_every = compact_every
    # Most rows a prefill call takes: a prefill costs the same per token from 8 rows up,
    # and parts of few rows of similar length pad each prompt to little more than its own.
    self.prefill_rows = parallel.round_up(prefill_rows, self.batch_multiple)
    self.group_rows = group_rows  # False: calls take rows in order (benchmarks compare).
    self._prefix_caches = {}
    stop, content = self._token_masks()
    eos_only = np.zeros_like(stop)
    eos_only[list(tokenizer.eos_ids)] = True
    # eos_mask: for SamplingConfig(stop_at_newline=False).
    self.stop_mask, self.content_mask, self.eos_mask = self.backend.shared(
        (stop, content, eos_only))

  def with_state(self, state) -> 'Generator':
    """The same generator for new weights (e.g. after training); prefix caches are redone."""
    clone = object.__new__(Generator)
    clone.__dict__.update(self.__dict__)
    _, state = quantize_lib.apply(self.quantize, self._plain_graphdef, state)
    clone.state, clone._prefix_caches = self.backend.params(state), {}
    return clone

  def _call(self, fn, *args, donate=(), **static):
    """fn(graphdef, placed state, *args) compiled by the backend (static: hashable);
    `donate` = indices into args whose buffers the call may reuse."""
    return self.backend.compile(fn, self.graphdef, donate_argnums=tuple(i + 1 for i in donate),
                                **static)(self.state, *args)

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
    """Continues each prompt; output text is cut at the first stop string (or, with
    `sampling.stop_at_newline=False`, runs to EOS / the budget and is kept whole)."""
    prompts = [_as_pair(p) for p in prompts]
    texts, counts = [None] * len(prompts), [0] * len(prompts)
    key = jax.random.key(seed)
    bar = tqdm(total=len(prompts), desc=desc, unit='row', disable=not self.show_progress,
               leave=False)
    for prefix_len, cache, rows, token_rows in self._waves(prompts):
      # Row i of the call samples with fold_in(key, i): its tokens do not depend on which
      # rows share its batch, on --max_batch or on the device count.
      gen = self._generate_wave(prefix_len, cache, token_rows, sampling, key, np.asarray(rows))
      for row, tokens, length in zip(rows, gen.tokens, gen.lengths):
        text = self.tokenizer.decode(tokens[:length].tolist())
        texts[row] = self._cut_at_stop(text) if sampling.stop_at_newline else text
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
      logits = self._forward_last(batch)
      out[rows] = logits[: batch.num_rows]
    return out

  def embed(self, texts: Sequence[str], layer: int, batch_size: int | None = None) -> np.ndarray:
    """float32 [len(texts), D]: layer `layer`'s hidden states mean-pooled over each text's
    own tokens (BOS and padding excluded), texts of similar length batched together.

    Cut into parts by length like a wave's prompts (`_parts`, at most `batch_size` rows,
    default `prefill_rows`): a round's commands run from 5 to 100 tokens, and one batch
    padded to the longest spent ~17 s a 50 x 3 phase on padding (BUILD_NOTES "Sampling,
    prefill widths and waves")."""
    self._check_layer(layer)
    out = np.zeros((len(texts), self.config.embed_dim), np.float32)
    skip = 1 if self.add_bos else 0
    ids = [[self.tokenizer.bos_id] * skip + self.tokenizer.encode(t) for t in texts]
    for group in self._parts([len(i) for i in ids], batch_size or self.prefill_rows):
      batch = self._pad_token_rows([ids[i] for i in group], 0, 0)
      positions = np.maximum(np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None], 0)
      args = self.backend.rows((batch.tokens, positions, batch.key_start,
                                batch.key_start + skip))
      pooled = self._call(sampling_lib.pooled_hidden, *args, layer=layer)
      out[group] = self.backend.fetch(pooled)[: batch.num_rows]
    return out

  def fidelity(self, prompts: Sequence, completions: Sequence[str], layer: int, k: int,
               batch_size: int = 8) -> np.ndarray:
    """float64 [N]: per (prompt, completion), the fraction of the completion's tokens in the
    top-k of the logit lens at `layer` one position before them (one forward pass)."""
    self._check_layer(layer)
    if k < 1:
      raise UserError(f'fidelity k must be >= 1, got {k}')
    prompts = [_as_pair(p) for p in prompts]
    out = np.zeros((len(prompts),), np.float64)
    bar = tqdm(total=len(prompts), desc='fidelity', unit='row', disable=not self.show_progress,
               leave=False)
    for prefix, rows in self._chunks(prompts):
      for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        suffixes = [prompts[i][1] for i in part]
        targets = [self.tokenizer.encode(' ' + completions[i].strip()) for i in part]
        batch = self._pad_rows(suffixes, prefix, max_new=max(len(t) for t in targets),
                               completions=targets)
        prefix_len, cache = batch.prefix_len, batch.cache
        positions = np.maximum(
            prefix_len + np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None], 0)
        width = batch.tokens.shape[1]
        lengths = [len(t) for t in targets] + [len(targets[0])] * (len(batch.tokens) - len(part))
        target_start = np.asarray([width - n for n in lengths], np.int32)
        args = self.backend.rows((batch.tokens, positions, batch.key_start, target_start))
        values = self._call(sampling_lib.token_fidelity, *args, cache, layer=layer, k=k)
        out[part] = self.backend.fetch(values)[: batch.num_rows]
        bar.update(len(part))
    bar.close()
    return out

  def _check_layer(self, layer: int):
    if not 0 <= layer <= self.config.num_layers:
      raise UserError(f'layer {layer} is outside the model: choose 0..{self.config.num_layers}'
                      f' ({self.config.num_layers} = the final norm\'s input)')

  def _chunks(self, prompts):
    """(prefix, row indices) groups of at most max_batch rows sharing a prefix, rows of
    similar length together (`parallel.group_by_length`), for forward passes.

    Which rows share a call does not change a row's tokens (per-row keys, left padding
    masked), only how much padding the calls compute.
    """
    for prefix, rows in _by_prefix(prompts):
      lengths = [len(self.tokenizer.encode(prompts[i][1])) for i in rows]
      for group in self._parts(lengths, self.max_batch):
        yield prefix, [rows[i] for i in group]

  def _parts(self, lengths, max_rows: int) -> list[list[int]]:
    """Index groups of at most `max_rows` rows for forward calls: rows of similar length
    together, cut where padding is least (`parallel.group_by_length`; every group but the
    last a multiple of `batch_multiple` rows), or in order when `group_rows` is off."""
    if not self.group_rows:
      return [list(range(start, min(start + max_rows, len(lengths))))
              for start in range(0, len(lengths), max_rows)]
    return parallel.group_by_length(lengths, height_multiple=self.batch_multiple,
                                    max_rows=max_rows, length_multiple=self.length_multiple)

  def _waves(self, prompts):
    """(prefix length, prefix cache, row indices, their token ids): the rows sharing a
    prefix, shortest prompt first (unless `group_rows` is off), cut into near-equal waves
    of at most max_batch rows.

    A wave is one decode loop. Its rows stop at their own pace, but a step costs a fixed
    ~45 ms (the weights are read whatever the batch) on this CPU plus ~2 ms a row, so the
    few long rows of a wave (flag spam runs the whole budget) are the expensive part:
    one wave pays for that tail once, where batches of 64 paid for it once each
    (BUILD_NOTES "Sampling, prefill widths and waves").
    """
    for prefix, rows in _by_prefix(prompts):
      prefix_len, cache, token_rows = self._prompt_rows(prefix, [prompts[i][1] for i in rows])
      order = list(range(len(rows)))
      if self.group_rows:
        order.sort(key=lambda j: (len(token_rows[j]), rows[j]))
      size = -(-len(rows) // -(-len(rows) // self.max_batch))
      for start in range(0, len(rows), size):
        wave = order[start:start + size]
        yield prefix_len, cache, [rows[j] for j in wave], [token_rows[j] for j in wave]

  def _cut_at_stop(self, text: str) -> str:
    """Leading blank space is dropped (rows stop only after visible text), then cut."""
    text = text.lstrip()
    for stop in self.stop_strings:
      if stop in text:
        text = text[: text.index(stop)]
    return text

  def _prefix_cache(self, head: tuple[int, ...]):
    """(length, cache) of BOS + the shared prefix ids `head`, prefilled once per weights."""
    if head not in self._prefix_caches:
      tokens = ([self.tokenizer.bos_id] if self.add_bos else []) + list(head)
      cache = None
      if tokens:  # Every device computes the (small) prefix whole: it is shared.
        cache = self._call(sampling_lib.prefill_prefix,
                           self.backend.shared(np.asarray(tokens, np.int32)))
      self._prefix_caches[head] = (len(tokens), cache)
    return self._prefix_caches[head]

  def _split_rows(self, prefix: str, suffixes) -> tuple[tuple[int, ...], list[list[int]]]:
    """(shared prefix ids, row ids): each row's prompt is exactly the tokens of the joined
    text prefix + suffix (`Tokenizer.split_joined`), with the longest shared head."""
    if not prefix:
      return (), [self.tokenizer.encode(s) for s in suffixes]
    splits = [self.tokenizer.split_joined(prefix, s) for s in suffixes]
    keep = min(len(head) for head, _ in splits)
    return splits[0][0][:keep], [list(head[keep:]) + list(rest) for head, rest in splits]

  def _prompt_rows(self, prefix, suffixes) -> tuple[int, object, list[list[int]]]:
    """(prefix length, prefix cache or None, each row's own token ids)."""
    head, rows = self._split_rows(prefix, suffixes)
    prefix_len, cache = self._prefix_cache(head) if prefix else (0, None)
    if not prefix_len:  # Without a prefix the BOS token starts each row.
      rows = [([self.tokenizer.bos_id] if self.add_bos else []) + r for r in rows]
    return prefix_len, cache, rows

  def _pad_rows(self, suffixes, prefix, max_new, completions=None) -> _Batch:
    """Left-padded rows; `completions` (token lists) are appended to the suffixes."""
    prefix_len, cache, rows = self._prompt_rows(prefix, suffixes)
    if completions is not None:
      rows = [r + list(c) for r, c in zip(rows, completions)]
      max_new = 0
    batch = self._pad_token_rows(rows, prefix_len, max_new)
    batch.prefix_len, batch.cache = prefix_len, cache
    return batch

  def _pad_token_rows(self, rows, prefix_len, max_new) -> _Batch:
    longest = max(len(r) for r in rows)
    if prefix_len + longest + max_new > self.config.max_seq_len:
      raise UserError(
          f'a prompt of {prefix_len + longest} tokens plus {max_new} new tokens exceeds the '
          f"model's context of {self.config.max_seq_len} tokens; shorten the prompt or lower "
          'max_new_tokens')
    if longest == 0:
      raise UserError('a prompt is empty; give the model some text to continue')
    # A fine width: rows grouped by length pad little (a wave's decode cache is coarser).
    width = parallel.round_up(longest, self.length_multiple)
    height = parallel.round_up(len(rows), self.batch_multiple)
    num_rows = len(rows)
    rows = rows + [rows[0]] * (height - len(rows))
    tokens = np.full((height, width), self.tokenizer.pad_id, np.int32)
    key_start = np.zeros((height,), np.int32)
    for index, row in enumerate(rows):
      tokens[index, width - len(row):] = row
      key_start[index] = width - len(row)
    return _Batch(tokens, key_start, num_rows)

  def _generate_wave(self, prefix_len, cache, token_rows, sampling, key,
                     row_ids) -> sampling_lib.Generation:
    """Generation of one wave: prefilled in parts (`_parts`, each at its own fine width),
    decoded together in one compacting loop on a cache of the wave's coarse width.
    Without compaction (pmap, or compact_every=0) each part is one device call."""
    max_new = sampling.max_new_tokens
    # The decode reads every cache slot each step: a width of a few buckets, not a power of 2.
    cache_width = parallel.round_up(max(len(r) for r in token_rows), DECODE_WIDTH_MULTIPLE)
    stop_mask = self.stop_mask if sampling.stop_at_newline else self.eos_mask
    common = dict(sampling=sampling, pad_id=int(self.tokenizer.pad_id))
    compacting = self.compact_every and isinstance(self.backend, parallel.MeshBackend)
    tokens = np.full((len(token_rows), max_new), self.tokenizer.pad_id, np.int32)
    lengths = np.zeros((len(token_rows),), np.int32)
    key_data = np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.asarray(row_ids, jnp.int32))))  # Row i of the wave: fold_in(key, row_ids[i]).
    parts, slots = [], []
    for part in map(np.asarray, self._parts([len(r) for r in token_rows], self.prefill_rows)):
      batch = self._pad_token_rows([token_rows[i] for i in part], prefix_len, max_new)
      padded = np.concatenate([part, np.full(len(batch.tokens) - len(part), part[0])])
      parts.append((part, self.backend.rows((batch.tokens, batch.key_start, key_data[padded]))))
      slots.append(np.where(np.arange(len(padded)) < len(part), padded, -1))
    if not compacting:  # One call per part: rows finish at the longest row's pace.
      for part, rows in parts:
        gen = self.backend.fetch(self._call(_generate, *rows, stop_mask, self.content_mask,
                                            cache, cache_prompt_len=cache_width, **common))
        tokens[part] = np.asarray(gen.tokens)[:len(part)]
        lengths[part] = np.asarray(gen.lengths)[:len(part)]
      return sampling_lib.Generation(tokens, lengths)
    # Every part writes its rows into one carry in place (concatenating the parts'
    # caches copied ~1 GB per 50 x 3 stage, 0.9 s each).
    slots = np.concatenate(slots)
    carry, row = None, 0
    generated = _generated_slots(self.compact_every, max_new)  # The first call's steps.
    for _, rows in parts:
      if carry is None:
        carry = self._call(_prefill, *rows, stop_mask, self.content_mask, cache,
                           cache_prompt_len=cache_width, batch=len(slots),
                           generated_slots=generated, **common)
      else:
        carry = self._call(_prefill_into, carry, self.backend.shared(np.int32(row)), *rows,
                           stop_mask, self.content_mask, cache, donate=(0,),
                           cache_prompt_len=cache_width, **common)
      row += rows[0].shape[0]  # The part's height.
    self._compacting_decode(carry, slots, cache, stop_mask, tokens, lengths,
                            prompt_slots=cache_width, generated=generated, **common)
    return sampling_lib.Generation(tokens, lengths)

  def _compacting_decode(self, carry, slots, cache, stop_mask, out, lengths, *, sampling,
                         pad_id, prompt_slots, generated):
    """Decodes `compact_every` steps at a time; when at most half the rows are still
    going, finished rows are collected and the batch shrinks to the next smaller bucket
    (halving, not below `batch_multiple`), so they stop costing decode steps.

    The cache starts with `generated` empty slots after the prompts and grows (in the
    shrinking copy when there is one) before the next call would run out: every step
    reads every slot, and the first steps, at the full batch, need few.

    `slots[i]` is the row of `out`/`lengths` that carry row i holds (-1: a padding copy);
    each row's tokens and length are written there when it leaves the batch. Same tokens
    as one `generate` call: every row keeps its own key and the shared step. Runs on
    global arrays (the mesh backend): the batch may shrink to any bucket.
    """
    max_new = sampling.max_new_tokens
    common = dict(sampling=sampling, pad_id=pad_id)
    step = 1
    while True:
      until = min(step + self.compact_every, max_new)
      carry = self._call(_decode, carry, stop_mask, self.content_mask, cache,
                         self.backend.shared(np.int32(until)), donate=(0,),
                         prompt_slots=prompt_slots, **common)
      before, step = step, int(self.backend.fetch_shared(carry.step))
      done = self.backend.fetch(carry.done)
      if step == before and not done.all():  # A cache too short for the call's steps.
        raise RuntimeError(f'decode made no progress at step {step}: no empty cache slot')
      alive = np.flatnonzero(~done & (slots >= 0))
      target = len(slots)
      while target // 2 >= max(len(alive), self.batch_multiple):
        target //= 2
      if step >= max_new or not len(alive) or target < len(slots):
        finished = self.backend.fetch(
            self.backend.compile(sampling_lib.finish, pad_id=pad_id)(carry))
        gone = np.flatnonzero(slots >= 0) if step >= max_new or not len(alive) else \
            np.flatnonzero(done & (slots >= 0))
        out[slots[gone]] = np.asarray(finished.tokens)[gone]
        lengths[slots[gone]] = np.asarray(finished.lengths)[gone]
        if step >= max_new or not len(alive):
          return
      # The next call runs steps up to min(step + compact_every, max_new) - 1.
      grow = _generated_slots(min(step + self.compact_every, max_new) - 1, max_new) - generated
      if target < len(slots) or grow > 0:
        keep = np.arange(len(slots)) if target == len(slots) else np.concatenate(
            [alive, np.full(target - len(alive), alive[0])])
        carry = self.backend.compile(sampling_lib.take_rows, extra_slots=max(grow, 0))(
            carry, self.backend.shared(keep.astype(np.int32)))
        if target < len(slots):
          slots = np.concatenate([slots[alive], np.full(target - len(alive), -1)])
        generated += max(grow, 0)

  def _forward_last(self, batch: _Batch) -> np.ndarray:
    prefix_len, cache = batch.prefix_len, batch.cache
    positions = np.maximum(
        prefix_len + np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None], 0)
    args = self.backend.rows((batch.tokens, positions, batch.key_start))
    return self.backend.fetch(self._call(_forward_last, *args, cache))[:, -1]


def _generated_slots(steps: int, max_new: int) -> int:
  """Empty decode cache slots for `steps` steps: a multiple of DECODE_WIDTH_MULTIPLE (each
  is a compiled decode loop per batch bucket), or the whole budget when that is near."""
  slots = parallel.round_up(max(steps, 1), DECODE_WIDTH_MULTIPLE)
  return max_new if slots + DECODE_WIDTH_MULTIPLE > max_new else slots


def _by_prefix(prompts) -> list[tuple[str, list[int]]]:
  """(prefix, indices of the prompts with it), prefixes in order of first use."""
  groups: dict[str, list[int]] = {}
  for index, (prefix, _) in enumerate(prompts):
    groups.setdefault(prefix, []).append(index)
  return list(groups.items())


def _as_pair(prompt) -> tuple[str, str]:
  """Accepts `prompts.Prompt` objects or (prefix, suffix) tuples."""
  return (prompt.prefix, prompt.suffix) if hasattr(prompt, 'prefix') else tuple(prompt)


# Pure functions the backend compiles: per-row keys travel as raw key data (uint32),
# which every backend can place and split.

def _generate(graphdef, state, tokens, key_start, key_data, stop_mask, content_mask, prefix,
              *, sampling, pad_id, cache_prompt_len):
  keys = jax.random.wrap_key_data(key_data)
  return sampling_lib.generate(graphdef, state, tokens, key_start, keys, stop_mask,
                               content_mask, prefix=prefix, sampling=sampling, pad_id=pad_id,
                               cache_prompt_len=cache_prompt_len)


def _prefill(graphdef, state, tokens, key_start, key_data, stop_mask, content_mask, prefix,
             *, sampling, pad_id, cache_prompt_len, batch, generated_slots):
  keys = jax.random.wrap_key_data(key_data)
  return sampling_lib.prefill(graphdef, state, tokens, key_start, keys, stop_mask,
                              content_mask, prefix=prefix, sampling=sampling, pad_id=pad_id,
                              cache_prompt_len=cache_prompt_len, batch=batch,
                              generated_slots=generated_slots)


def _prefill_into(graphdef, state, carry, row, tokens, key_start, key_data, stop_mask,
                  content_mask, prefix, *, sampling, pad_id, cache_prompt_len):
  keys = jax.random.wrap_key_data(key_data)
  return sampling_lib.prefill(graphdef, state, tokens, key_start, keys, stop_mask,
                              content_mask, prefix=prefix, sampling=sampling, pad_id=pad_id,
                              carry=carry, row=row, cache_prompt_len=cache_prompt_len)


def _decode(graphdef, state, carry, stop_mask, content_mask, prefix, until, *, sampling,
            pad_id, prompt_slots):
  return sampling_lib.decode(graphdef, state, carry, stop_mask, content_mask, prefix=prefix,
                             sampling=sampling, pad_id=pad_id, until=until,
                             prompt_slots=prompt_slots)


def _forward_last(graphdef, state, tokens, positions, key_start, prefix):
  return model_lib.forward(graphdef, state, tokens, positions, key_start, prefix=prefix,
                           last_only=True)[0]
