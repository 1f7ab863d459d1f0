"""The shapes a generator's calls take: rows grouped by prefix, cut into waves and prefill
parts of similar length, left-padded to a few widths.

Pure host-side arithmetic over token ids and lengths. Every width or height is a compiled
program, so these rules trade padding (wasted FLOPs) against compiles (BUILD_NOTES
"Sampling, prefill widths and waves", "Prefill parts cut by length").
"""

import dataclasses

import numpy as np

from inversion_jax import parallel
from inversion_jax.errors import UserError

# A wave's prompt slots in the decode cache: coarser than the prefill widths, since each
# width is another compiled decode loop, and finer than powers of two, since every step
# reads every slot.
DECODE_WIDTH_MULTIPLE = 32


@dataclasses.dataclass(frozen=True)
class Shapes:
  """A generator's padding rules: rows per wave (`max_batch`) and per prefill part
  (`prefill_rows`), heights a multiple of `batch_multiple` (times the data shards),
  widths of `length_multiple`; `group_rows` off keeps rows in order (benchmarks compare)."""

  max_batch: int
  batch_multiple: int
  length_multiple: int
  prefill_rows: int
  group_rows: bool = True


@dataclasses.dataclass
class Batch:
  tokens: np.ndarray  # [B, Tp] left-padded
  key_start: np.ndarray  # [B]
  num_rows: int  # Real rows; the rest are padding copies.
  prefix_len: int = 0  # Tokens in the shared prefix cache (BOS included).
  cache: object = None  # The shared prefix's cache, or None.


def as_pair(prompt) -> tuple[str, str]:
  """Accepts `prompts.Prompt` objects or (prefix, suffix) tuples."""
  return (prompt.prefix, prompt.suffix) if hasattr(prompt, 'prefix') else tuple(prompt)


def by_prefix(prompts) -> list[tuple[str, list[int]]]:
  """(prefix, indices of the prompts with it), prefixes in order of first use."""
  groups: dict[str, list[int]] = {}
  for index, (prefix, _) in enumerate(prompts):
    groups.setdefault(prefix, []).append(index)
  return list(groups.items())


def parts(lengths, max_rows: int, shapes: Shapes) -> list[list[int]]:
  """Index groups of at most `max_rows` rows for forward calls: rows of similar length
  together, cut where padding is least (`parallel.group_by_length`; every group but the
  last a multiple of `batch_multiple` rows), or in order when `group_rows` is off."""
  if not shapes.group_rows:
    return [list(range(start, min(start + max_rows, len(lengths))))
            for start in range(0, len(lengths), max_rows)]
  return parallel.group_by_length(lengths, height_multiple=shapes.batch_multiple,
                                  max_rows=max_rows, length_multiple=shapes.length_multiple)


def waves(lengths, shapes: Shapes) -> list[list[int]]:
  """Index groups of one prefix's rows, shortest prompt first (unless `group_rows` is off),
  cut into near-equal waves of at most `max_batch` rows.

  A wave is one decode loop. Its rows stop at their own pace, but a step costs a fixed
  part (the weights are read whatever the batch) plus a little a row, so the few long
  rows of a wave (flag spam runs the whole budget) are the expensive part: one wave pays
  for that tail once, where small batches paid for it once each.
  """
  order = list(range(len(lengths)))
  if shapes.group_rows:
    order.sort(key=lambda j: (lengths[j], j))
  size = -(-len(order) // -(-len(order) // shapes.max_batch))
  return [order[start:start + size] for start in range(0, len(order), size)]


def pad_token_rows(rows, prefix_len: int, max_new: int, *, shapes: Shapes, pad_id: int,
                   max_seq_len: int) -> Batch:
  """Rows left-padded to a fine width (rows grouped by length pad little; a wave's decode
  cache is coarser), padding copies of the first row up to the height multiple."""
  longest = max(len(r) for r in rows)
  if prefix_len + longest + max_new > max_seq_len:
    raise UserError(
        f'a prompt of {prefix_len + longest} tokens plus {max_new} new tokens exceeds the '
        f"model's context of {max_seq_len} tokens; shorten the prompt or lower "
        'max_new_tokens')
  if longest == 0:
    raise UserError('a prompt is empty; give the model some text to continue')
  width = parallel.round_up(longest, shapes.length_multiple)
  height = parallel.round_up(len(rows), shapes.batch_multiple)
  num_rows = len(rows)
  rows = rows + [rows[0]] * (height - len(rows))
  tokens = np.full((height, width), pad_id, np.int32)
  key_start = np.zeros((height,), np.int32)
  for index, row in enumerate(rows):
    tokens[index, width - len(row):] = row
    key_start[index] = width - len(row)
  return Batch(tokens, key_start, num_rows)


def generated_slots(steps: int, max_new: int) -> int:
  """Empty decode cache slots for `steps` steps: a multiple of DECODE_WIDTH_MULTIPLE (each
  is a compiled decode loop per batch bucket), or the whole budget when that is near."""
  slots = parallel.round_up(max(steps, 1), DECODE_WIDTH_MULTIPLE)
  return max_new if slots + DECODE_WIDTH_MULTIPLE > max_new else slots
