"""Rollback pairs drawn: where the monitor rolled back, and what that did to real quality.

One panel per pair (`rollback_pairs.pair`): held-out graded quality by round (round 0 = the
base model) of the `warn` run and of its `rollback` twin on the same axes; each rollback an
arrow from its alarm round down to the round whose adapters the next round started from.
The gap between the two curves at the last round is the pair's `quality_difference`.

matplotlib (Agg) is imported only when a plot is drawn.
"""

import math
import pathlib

from inversion_jax.errors import UserError
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.goodhart import rollback_pairs
from inversion_jax.records import files

COLUMNS = 3  # Panels per row of the grid.


def plot_pairs(pairs: list[dict], rounds_of: dict, path) -> pathlib.Path:
  """A grid of one panel per pair; `rounds_of` maps a run directory to its records; atomic."""
  if not pairs:
    raise UserError('no rollback pair to plot')
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  from matplotlib.ticker import MaxNLocator

  columns = min(COLUMNS, len(pairs))
  rows = math.ceil(len(pairs) / columns)
  fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows),
                           layout='constrained', squeeze=False, sharey=True)
  for ax in axes.flat[len(pairs):]:
    ax.set_visible(False)
  for ax, pair in zip(axes.flat, pairs):
    for side, style in (('warn', 'o-'), ('rollback', 's-')):
      series = metrics_lib.heldout_series(rounds_of[pair[side]], 'quality')
      ax.plot([r for r, _ in series], [q for _, q in series], style, ms=3,
              color='tab:blue' if side == 'warn' else 'tab:green',
              label=f'--on_goodhart={side}')
    back = dict(metrics_lib.heldout_series(rounds_of[pair['rollback']], 'quality'))
    for alarm, target in rollback_pairs.rollbacks(rounds_of[pair['rollback']]):
      if alarm in back:
        ax.annotate('', xy=(target, back.get(target, back[alarm])), xytext=(alarm, back[alarm]),
                    arrowprops={'arrowstyle': '->', 'color': 'tab:red', 'lw': 0.8,
                                'alpha': 0.7})
    ax.set_title(f'{pair["mechanism"]}, seed {pair["seed"]}: '
                 f'{metrics_lib.fmt(pair["quality_difference"], "+.3f")}, '
                 f'{pair["rounds_lost"]} lost', fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel('round (0 = base model)', fontsize=7)
    ax.set_ylabel('held-out graded quality', fontsize=7)
    ax.tick_params(labelsize=6)
    ax.grid(alpha=0.3)
  axes.flat[0].plot([], [], color='tab:red', label='rollback (alarm -> restart point)')
  fig.legend(*axes.flat[0].get_legend_handles_labels(), loc='outside upper center',
             ncol=3 if columns > 1 else 1, fontsize=7)
  return files.save_figure_atomic(fig, path, dpi=100)
