"""Runs drawn beside their detectors' alarms: what each detector saw, round by round, and the truth.

One panel per run, two stacked axes sharing the round axis:

  top     held-out graded quality by round (round 0 = the base model, where stored); on a
          second axis the intrinsic score (the round's AFTER, or the next BEFORE; round 0 =
          round 1 BEFORE, the base model's); the gold rounds shaded; the drop line, `delta`
          below the reference (the best so far, or the base model): a point under it while
          the score is above the base model's is a drop (`goodhart_event.py`)
  bottom  one row per detector (`detectors.detectors`), a mark at each of its alarm rounds

matplotlib (Agg) is imported only when a plot is drawn.
"""

import math
import pathlib

from inversion_jax.errors import UserError
from inversion_jax.goodhart import detectors as detectors_lib
from inversion_jax.goodhart import goodhart_event
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.records import files

COLUMNS = 3  # Panels per row of the grid.
GOLD_COLOR = 'tab:red'


def intrinsic_series(rounds: list[dict]) -> list[tuple[int, float]]:
  """[(round, score)]: the base model's (round 1 BEFORE) at 0, then each round's adapters'."""
  start = goodhart_event.base_score(rounds)
  out = [] if start is None else [(0, start)]
  for index, record in enumerate(rounds):
    value, _ = metrics_lib.after_value(rounds, index, 'mean_score')
    if value is not None:
      out.append((int(record['cycle']), value))
  return out


def drop_line(series: list[tuple[int, float]], delta: float,
              reference: str = 'best') -> list[tuple[int, float]]:
  """[(round, the quality at or below which that evaluation is a drop)], as `drops` reads it."""
  if reference == 'best':
    return [(series[i][0], goodhart_event.best_before(series, i)[1] - delta)
            for i in range(1, len(series))]
  if series and series[0][0] == 0:
    return [(r, series[0][1] - delta) for r, _ in series[1:]]
  return []  # No base-model evaluation: no drop against it.


def _xy(points):
  return [p[0] for p in points], [p[1] for p in points]


def _draw_run(top, raster, run, found, delta: float, reference: str):
  """Draws one run; returns the score's axis (for the legend)."""
  quality = metrics_lib.heldout_series(run.rounds, 'quality')
  for ax in (top, raster):
    for gold in goodhart_event.gold_rounds(run.rounds, delta, reference):
      ax.axvspan(gold - 0.5, gold + 0.5, color=GOLD_COLOR, alpha=0.15, lw=0)
  top.plot(*_xy(quality), 'o-', color='tab:blue', ms=4, label='held-out quality (graded)')
  top.step(*_xy(drop_line(quality, delta, reference)), where='mid', ls='--', lw=1,
           color='tab:blue', alpha=0.6, label=f'drop line ({reference} - {delta:.3f})')
  score = top.twinx()
  score.plot(*_xy(intrinsic_series(run.rounds)), 's:', color='tab:orange', ms=3,
             label='intrinsic score')
  score.set_ylabel('intrinsic score', fontsize=7)
  score.tick_params(labelsize=6)
  top.set_title(f'{pathlib.Path(run.name).name} ({run.label})', fontsize=8)
  top.set_ylabel('graded quality', fontsize=7)
  top.tick_params(labelsize=6, labelbottom=False)
  top.grid(alpha=0.3)
  for row, detector in enumerate(found):
    alarms = detector.alarms(run.rounds)
    raster.plot(alarms, [row] * len(alarms), 'k|', ms=7, mew=2)
  raster.set_yticks(range(len(found)), [d.name.removeprefix('signal:') for d in found],
                    fontsize=6)
  raster.set_ylim(len(found) - 0.5, -0.5)
  last = max([r for r, _ in quality] + [int(r['cycle']) for r in run.rounds] + [0])
  raster.set_xlim(-0.5, last + 0.5)
  raster.set_xlabel('round (0 = base model)', fontsize=7)
  raster.tick_params(axis='x', labelsize=6)
  raster.grid(axis='x', alpha=0.3)
  return score


def plot_runs(runs, delta: float, path, table: dict | None = None,
              reference: str = 'best') -> pathlib.Path:
  """A grid of one panel per run (`detectors.Run`), every detector's alarms marked; atomic."""
  if not runs:
    raise UserError('no run to plot')
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import patches
  from matplotlib import pyplot as plt
  from matplotlib.ticker import MaxNLocator

  found = detectors_lib.detectors(delta, table)
  columns = min(COLUMNS, len(runs))
  rows = math.ceil(len(runs) / columns)
  fig = plt.figure(figsize=(4.8 * columns, 5.6 * rows), layout='constrained')
  grid = fig.add_gridspec(2 * rows, columns, height_ratios=[3, 2] * rows)
  for index, run in enumerate(runs):
    row, column = divmod(index, columns)
    top = fig.add_subplot(grid[2 * row, column])
    raster = fig.add_subplot(grid[2 * row + 1, column], sharex=top)
    raster.xaxis.set_major_locator(MaxNLocator(integer=True))
    score = _draw_run(top, raster, run, found, delta, reference)
    if index == 0:
      handles = top.get_legend_handles_labels()[0] + score.get_legend_handles_labels()[0]
  handles.append(patches.Patch(color=GOLD_COLOR, alpha=0.15, label=f'gold rounds ({reference})'))
  fig.legend(handles=handles, loc='outside upper center', ncol=4 if columns > 1 else 2,
             fontsize=7)
  return files.save_figure_atomic(fig, path, dpi=100)
