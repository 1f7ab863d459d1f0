"""Text in, text out: tokenises prompts, pads them to shape buckets, runs the jitted sampler.

A prompt is a `(prefix, suffix)` pair. Rows sharing a prefix (a few-shot header) are
decoded together against ONE prefilled prefix cache, memoised per generator. They are
sorted by length and cut into waves of at most `max_batch` rows; a wave is prefilled in
parts of at most `prefill_rows` rows of similar length (`batching.py`) written into one
decode carry, then decoded in one loop that drops finished rows (`compaction.py`). The
forward passes without sampling (logits, embeddings, fidelity) use the same weights and
batching (`forward_passes.py`). Where it runs is the backend's business (`parallel`):
every compiled call goes through `Generator.call`, its inputs through
`backend.rows/shared`.
"""

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from inversion_jax import parallel
from inversion_jax.decode import batching
from inversion_jax.decode import compaction
from inversion_jax.decode import forward_passes
from inversion_jax.decode import programs
from inversion_jax.decode import sampling as sampling_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn import quantize as quantize_lib


@dataclasses.dataclass(frozen=True)
class Completions:
  """Decoded continuations, one per prompt, with their token counts."""

  texts: list[str]
  num_tokens: list[int]


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
    multiple = batch_multiple * self.backend.data_size
    # Prompts pad to a multiple of 8 tokens: 15 % fewer prefill slots than 16 in a 50 x 3
    # phase, for more compiled prefill shapes (BUILD_NOTES "Prefill parts cut by length").
    # A prefill costs the same per token from 8 rows up, and parts of few rows of similar
    # length pad each prompt to little more than its own.
    self.shapes = batching.Shapes(
        max_batch=parallel.round_up(max_batch, multiple), batch_multiple=multiple,
        length_multiple=length_multiple, prefill_rows=parallel.round_up(prefill_rows, multiple),
        group_rows=group_rows)
    self.add_bos = add_bos and tokenizer.bos_id is not None
    self.show_progress = show_progress
    # Decode steps between checks for finished rows; 0 = one device call per batch.
    self.compact_every = compact_every
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

  def call(self, fn, *args, donate=(), **static):
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
    prompts = [batching.as_pair(p) for p in prompts]
    texts, counts = [None] * len(prompts), [0] * len(prompts)
    key = jax.random.key(seed)
    bar = tqdm(total=len(prompts), desc=desc, unit='row', disable=not self.show_progress,
               leave=False)
    for prefix, rows in batching.by_prefix(prompts):
      prefix_len, cache, token_rows = self._prompt_rows(prefix, [prompts[i][1] for i in rows])
      for wave in batching.waves([len(r) for r in token_rows], self.shapes):
        wave_rows = [rows[j] for j in wave]
        # Row i of the call samples with fold_in(key, i): its tokens do not depend on which
        # rows share its batch, on --max_batch or on the device count.
        gen = self._generate_wave(prefix_len, cache, [token_rows[j] for j in wave], sampling,
                                  key, np.asarray(wave_rows))
        for row, tokens, length in zip(wave_rows, gen.tokens, gen.lengths):
          text = self.tokenizer.decode(tokens[:length].tolist())
          texts[row] = self._cut_at_stop(text) if sampling.stop_at_newline else text
          counts[row] = int(length)
        bar.update(len(wave))
    bar.close()
    return Completions(texts, counts)

  def last_token_logits(self, prompts: Sequence) -> np.ndarray:
    """float32 [len(prompts), V] logits of the token that would follow each prompt."""
    return forward_passes.last_token_logits(self, prompts)

  def embed(self, texts: Sequence[str], layer: int, batch_size: int | None = None) -> np.ndarray:
    """float32 [len(texts), D]: layer `layer`'s mean-pooled hidden states of each text."""
    return forward_passes.embed(self, texts, layer, batch_size)

  def fidelity(self, prompts: Sequence, completions: Sequence[str], layer: int, k: int,
               batch_size: int = 8) -> np.ndarray:
    """float64 [N]: the logit-lens top-k fidelity of each (prompt, completion)."""
    return forward_passes.fidelity(self, prompts, completions, layer, k, batch_size)

  def chunks(self, prompts):
    """(prefix, row indices) groups of at most max_batch rows sharing a prefix, rows of
    similar length together (`batching.parts`), for forward passes.

    Which rows share a call does not change a row's tokens (per-row keys, left padding
    masked), only how much padding the calls compute.
    """
    for prefix, rows in batching.by_prefix(prompts):
      lengths = [len(self.tokenizer.encode(prompts[i][1])) for i in rows]
      for group in batching.parts(lengths, self.shapes.max_batch, self.shapes):
        yield prefix, [rows[i] for i in group]

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
        cache = self.call(sampling_lib.prefill_prefix,
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

  def pad_rows(self, suffixes, prefix, max_new, completions=None) -> batching.Batch:
    """Left-padded rows with their prefix cache; `completions` (token lists) are appended
    to the suffixes."""
    prefix_len, cache, rows = self._prompt_rows(prefix, suffixes)
    if completions is not None:
      rows = [r + list(c) for r, c in zip(rows, completions)]
      max_new = 0
    batch = self.pad_token_rows(rows, prefix_len, max_new)
    batch.prefix_len, batch.cache = prefix_len, cache
    return batch

  def pad_token_rows(self, rows, prefix_len, max_new) -> batching.Batch:
    return batching.pad_token_rows(rows, prefix_len, max_new, shapes=self.shapes,
                                   pad_id=self.tokenizer.pad_id,
                                   max_seq_len=self.config.max_seq_len)

  def _generate_wave(self, prefix_len, cache, token_rows, sampling, key,
                     row_ids) -> sampling_lib.Generation:
    """Generation of one wave: prefilled in parts (`batching.parts`, each at its own fine
    width), decoded together in one compacting loop on a cache of the wave's coarse width.
    Without compaction (pmap, or compact_every=0) each part is one device call."""
    max_new = sampling.max_new_tokens
    # The decode reads every cache slot each step: a width of a few buckets, not a power of 2.
    cache_width = parallel.round_up(max(len(r) for r in token_rows),
                                    batching.DECODE_WIDTH_MULTIPLE)
    stop_mask = self.stop_mask if sampling.stop_at_newline else self.eos_mask
    spec = sampling_lib.DecodeSpec(sampling, int(self.tokenizer.pad_id), prompt_slots=cache_width)
    compacting = self.compact_every and isinstance(self.backend, parallel.MeshBackend)
    tokens = np.full((len(token_rows), max_new), self.tokenizer.pad_id, np.int32)
    lengths = np.zeros((len(token_rows),), np.int32)
    key_data = np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(
        jnp.asarray(row_ids, jnp.int32))))  # Row i of the wave: fold_in(key, row_ids[i]).
    parts, slots = [], []
    for part in map(np.asarray, batching.parts([len(r) for r in token_rows],
                                               self.shapes.prefill_rows, self.shapes)):
      batch = self.pad_token_rows([token_rows[i] for i in part], prefix_len, max_new)
      padded = np.concatenate([part, np.full(len(batch.tokens) - len(part), part[0])])
      parts.append((part, self.backend.rows((batch.tokens, batch.key_start, key_data[padded]))))
      slots.append(np.where(np.arange(len(padded)) < len(part), padded, -1))
    if not compacting:  # One call per part: rows finish at the longest row's pace.
      for part, rows in parts:
        gen = self.backend.fetch(self.call(programs.generate, *rows, stop_mask,
                                           self.content_mask, cache, spec=spec))
        tokens[part] = np.asarray(gen.tokens)[:len(part)]
        lengths[part] = np.asarray(gen.lengths)[:len(part)]
      return sampling_lib.Generation(tokens, lengths)
    # Every part writes its rows into one carry in place (concatenating the parts'
    # caches copied ~1 GB per 50 x 3 stage, 0.9 s each).
    slots = np.concatenate(slots)
    carry, row = None, 0
    generated = batching.generated_slots(self.compact_every, max_new)  # The first call's steps.
    for _, rows in parts:
      if carry is None:
        first = dataclasses.replace(spec, batch=len(slots), generated_slots=generated)
        carry = self.call(programs.prefill, *rows, stop_mask, self.content_mask, cache,
                          spec=first)
      else:
        carry = self.call(programs.prefill_into, carry, self.backend.shared(np.int32(row)),
                          *rows, stop_mask, self.content_mask, cache, donate=(0,), spec=spec)
      row += rows[0].shape[0]  # The part's height.
    compaction.compacting_decode(self, carry, slots, cache, stop_mask, tokens, lengths,
                                 spec=spec, generated=generated)
    return sampling_lib.Generation(tokens, lengths)
