"""Padding to a few shapes: every distinct shape is a compilation."""


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def length_bucket(n: int, minimum: int = 16) -> int:
  """Pads lengths to a few shapes: powers of two up to 256, then multiples of 128.

  Each distinct shape costs a compilation (seconds for a 30-layer decode loop), so a
  run should see a handful of them; padding wastes at most half a short row.
  """
  if n <= 256:
    return max(minimum, 1 << max(0, (n - 1).bit_length()))
  return round_up(n, 128)


def group_by_length(lengths, *, height_multiple: int, max_rows: int,
                    length_multiple: int = 16) -> list[list[int]]:
  """Splits rows into calls so that little compute goes to padding.

  A call of n rows whose longest is L costs round_up(n, height_multiple) x
  round_up(L, length_multiple) token slots: left padding to the call's width (as
  `Generator` pads) and padding rows to the height. Rows sorted by length are cut into contiguous groups of at most
  `max_rows` minimising the sum (dynamic programming over the cut points; n is a few
  hundred at most). Cuts fall at multiples of `height_multiple`, so every group but the
  last is full: groups written one after another fill a batch without gaps. Returns
  indices into `lengths`, each group in ascending index order.
  """
  if max_rows < height_multiple:
    raise ValueError(f'max_rows {max_rows} < height_multiple {height_multiple}')
  order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  n = len(order)
  best = [0.0] + [float('inf')] * n
  cut = [0] * (n + 1)
  for end in range(1, n + 1):
    if end % height_multiple and end != n:
      continue  # Not a cut point.
    width = round_up(lengths[order[end - 1]], length_multiple)  # Longest: last.
    first = round_up(max(0, end - max_rows), height_multiple)
    for start in range(first, end, height_multiple):
      cost = best[start] + round_up(end - start, height_multiple) * width
      if cost < best[end]:
        best[end], cut[end] = cost, start
  groups, end = [], n
  while end:
    groups.append(sorted(order[cut[end]:end]))
    end = cut[end]
  return groups[::-1]
