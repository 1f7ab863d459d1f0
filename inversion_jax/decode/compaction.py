"""A wave's decode loop that drops finished rows: `compact_every` steps a call, then the
carry shrinks to a smaller batch bucket and its cache grows only as far as the next call
needs, so rows that stopped stop costing decode steps and early steps read a short cache.

Same tokens as one `generate` call: every row keeps its own key and the shared step. Runs
on global arrays (the mesh backend), where a batch may shrink to any bucket.
"""

import numpy as np

from inversion_jax.decode import batching
from inversion_jax.decode import programs
from inversion_jax.decode import sampling as sampling_lib


def compacting_decode(gen, carry, slots, cache, stop_mask, out, lengths, *,
                      spec: sampling_lib.DecodeSpec, generated: int) -> None:
  """Decodes `gen.compact_every` steps at a time; when at most half the rows are still
  going, finished rows are collected and the batch shrinks to the next smaller bucket
  (halving, not below `batch_multiple`).

  The cache starts with `generated` empty slots after the prompts and grows (in the
  shrinking copy when there is one) before the next call would run out.

  `slots[i]` is the row of `out`/`lengths` that carry row i holds (-1: a padding copy);
  each row's tokens and length are written there when it leaves the batch.
  """
  backend, every = gen.backend, gen.compact_every
  max_new, pad_id = spec.sampling.max_new_tokens, spec.pad_id
  step = 1
  while True:
    until = min(step + every, max_new)
    carry = gen.call(programs.decode, carry, stop_mask, gen.content_mask, cache,
                     backend.shared(np.int32(until)), donate=(0,), spec=spec)
    before, step = step, int(backend.fetch_shared(carry.step))
    done = backend.fetch(carry.done)
    if step == before and not done.all():  # A cache too short for the call's steps.
      raise RuntimeError(f'decode made no progress at step {step}: no empty cache slot')
    alive = np.flatnonzero(~done & (slots >= 0))
    target = len(slots)
    while target // 2 >= max(len(alive), gen.shapes.batch_multiple):
      target //= 2
    if step >= max_new or not len(alive) or target < len(slots):
      finished = backend.fetch(backend.compile(sampling_lib.finish, pad_id=pad_id)(carry))
      gone = np.flatnonzero(slots >= 0) if step >= max_new or not len(alive) else \
          np.flatnonzero(done & (slots >= 0))
      out[slots[gone]] = np.asarray(finished.tokens)[gone]
      lengths[slots[gone]] = np.asarray(finished.lengths)[gone]
      if step >= max_new or not len(alive):
        return
    # The next call runs steps up to min(step + every, max_new) - 1.
    grow = batching.generated_slots(min(step + every, max_new) - 1, max_new) - generated
    if target < len(slots) or grow > 0:
      keep = np.arange(len(slots)) if target == len(slots) else np.concatenate(
          [alive, np.full(target - len(alive), alive[0])])
      carry = backend.compile(sampling_lib.take_rows, extra_slots=max(grow, 0))(
          carry, backend.shared(keep.astype(np.int32)))
      if target < len(slots):
        slots = np.concatenate([slots[alive], np.full(target - len(alive), -1)])
      generated += max(grow, 0)
