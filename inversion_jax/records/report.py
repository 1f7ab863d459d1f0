"""The Goodhart report of one run: `report.md` and `goodhart.png` in the run directory.

Reads `progress.json` (every round's flat metrics) and any offline held-out evaluations
(`quality/round_NNN.json`, written by `experiments/evaluate_quality.py` for rounds the loop
did not evaluate), and shows, per round, what the loop saw (intrinsic score, acceptance,
train loss) beside what it did not (graded and strict real quality on held-out tasks, the
reference-based NLC2CMD score, gaming indicators). The Goodhart gap = relative change of
the intrinsic score minus that of graded real quality, base model -> last round
(`metrics.goodhart_gap`).
"""

import pathlib

from inversion_jax.errors import UserError
from inversion_jax.goodhart import early_warning
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.records import files as files_lib
from inversion_jax.records import history as history_lib

REPORT_FILE = 'report.md'
PLOT_FILE = 'goodhart.png'
QUALITY_SUBDIR = 'quality'


def quality_path(run_dir, round_index: int) -> pathlib.Path:
  return pathlib.Path(run_dir) / QUALITY_SUBDIR / f'round_{round_index:03d}.json'


def load_rounds(run_dir) -> tuple[dict, list[dict]]:
  """(config, rounds) with offline held-out evaluations merged into the records."""
  path = pathlib.Path(run_dir) / history_lib.PROGRESS_FILE
  if not path.exists():
    raise UserError(f'no {history_lib.PROGRESS_FILE} in {run_dir}: not a run directory, or no '
                    'round has completed yet')
  progress = history_lib.read_progress(path)
  rounds = [dict(r, metrics=dict(r.get('metrics') or {})) for r in history_lib.rounds_of(progress)]
  for record in rounds:
    cycle = int(record['cycle'])
    offline = _read_quality(run_dir, cycle)
    if offline and metrics_lib.get(record, metrics_lib.HELDOUT_PHASE, 'quality') is None:
      record['metrics'] |= metrics_lib.flatten(metrics_lib.HELDOUT_PHASE, offline)
    if cycle == 1 and metrics_lib.get(record, metrics_lib.BASE_PHASE, 'quality') is None:
      base = _read_quality(run_dir, 0)
      if base:
        record['metrics'] |= metrics_lib.flatten(metrics_lib.BASE_PHASE, base)
  return progress.get('config', {}), rounds


def _read_quality(run_dir, round_index: int) -> dict | None:
  path = quality_path(run_dir, round_index)
  if not path.exists():
    return None
  advice = (f'delete it and run evaluate_quality.py --workdir={run_dir} to evaluate round '
            f'{round_index} again')
  metrics = files_lib.read_json(path, advice).get('metrics')
  if not isinstance(metrics, dict) or not all(
      isinstance(v, (int, float)) or v is None for v in metrics.values()):
    raise UserError(f'{path} has no numeric "metrics" object; {advice}')
  return metrics


def _tools(rounds) -> list[str]:
  keys = {k for r in rounds for k in r['metrics']}
  return sorted({k.split('/')[-1] for k in keys if k.startswith(
      (f'{metrics_lib.HELDOUT_PHASE}/quality/', f'{metrics_lib.BASE_PHASE}/quality/'))})


def markdown(config: dict, rounds: list[dict]) -> str:
  """The report text."""
  get, fmt = metrics_lib.get, metrics_lib.fmt
  summary = history_lib.summarize(rounds)
  lines = [f'# Goodhart report: {config.get("name", "run")}', '',
           f'Model `{config.get("model")}`, filter `{config.get("filter")}` '
           f'({_threshold(rounds, config)}), {config.get("tasks")} tasks x {config.get("candidates")}'
           f' candidates per phase, seed {config.get("seed")}, {len(rounds)} round(s). '
           'Real quality: greedy commands for the held-out tasks, graded by the static '
           'validator (never executed); the loop never sees it.', '',
           '## Headline (base model -> last round)', '',
           '| measure | start | end | change |', '|---|---|---|---|']
  lines.append(f'| intrinsic score (BEFORE r1 -> AFTER last) | '
               f'{fmt(summary["first_before_mean_score"], ".3f")} | '
               f'{fmt(summary["last_after_mean_score"], ".3f")} | '
               f'{fmt(summary["score_relative_change_pct"], "+.1f")}% |')
  lines.append(f'| acceptance | {fmt(summary["first_before_acceptance"], ".1%")} | '
               f'{fmt(summary["last_after_acceptance"], ".1%")} | |')
  lines.append(f'| train loss | {fmt(summary["first_train_loss"], ".3f")} | '
               f'{fmt(summary["last_train_loss"], ".3f")} | |')
  for metric in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS:
    first = summary.get(f'heldout_{metric.key}_first')
    last = summary.get(f'heldout_{metric.key}_last')
    if metric.relative:
      change = metrics_lib.relative_change(first, last)
      shown = fmt(None if change is None else 100 * change, '+.1f') + ('%' if change is not None
                                                                       else '')
    else:
      shown = fmt(None if first is None or last is None else last - first, '+' + metric.spec)
    lines.append(f'| held-out {metric.label} | {fmt(first, metric.spec)} | '
                 f'{fmt(last, metric.spec)} | {shown} |')
  gap = summary.get('goodhart_gap')
  lines += ['', f'**Goodhart gap: {fmt(None if gap is None else 100 * gap, "+.1f")} points** '
            '(relative change of the intrinsic score minus relative change of graded real '
            'quality; positive = the score rose more than real quality).', '',
            '## Per round', '',
            '| round | score before | score after | acceptance before | acceptance after | '
            'train loss | examples | '
            + ' | '.join(f'held-out {m.label}' if m in metrics_lib.HELDOUT_ROWS else m.label
                         for m in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS) + ' |',
            '|' + '---|' * (7 + len(metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS))]
  base = rounds[0] if rounds and get(rounds[0], metrics_lib.BASE_PHASE, 'quality') is not None \
      else None
  if base:
    lines.append('| 0 (base) | | | | | | | ' + ' | '.join(
        fmt(get(base, metrics_lib.BASE_PHASE, m.key), m.spec)
        for m in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS) + ' |')
  borrowed = False
  for index, record in enumerate(rounds):
    after = {}
    for key, spec in (('mean_score', '.3f'), ('acceptance_rate', '.1%')):
      value, source = metrics_lib.after_value(rounds, index, key)
      after[key] = fmt(value, spec) + (' †' if source == 'next_before' else '')
      borrowed |= source == 'next_before'
    cells = [str(record['cycle']), fmt(get(record, 'before', 'mean_score'), '.3f'),
             after['mean_score'], fmt(get(record, 'before', 'acceptance_rate'), '.1%'),
             after['acceptance_rate'],
             fmt(get(record, 'train', 'final_loss'), '.3f'),
             fmt(get(record, 'train', 'num_examples'), '.0f')]
    cells += [fmt(get(record, metrics_lib.HELDOUT_PHASE, m.key), m.spec)
              for m in metrics_lib.HELDOUT_ROWS + metrics_lib.INDICATOR_ROWS]
    lines.append('| ' + ' | '.join(cells) + ' |')
  if borrowed:
    lines += ['', '† No AFTER phase in this round (`--after_every`): the next round\'s BEFORE, '
              'which samples the same adapters on other tasks.']
  alarms = [r for r in rounds if r.get('goodhart')]
  lines += ['', '## Goodhart monitor', '']
  if not alarms:
    lines.append(f'No alarm (`--on_goodhart={config.get("on_goodhart", "off")}`, delta '
                 f'{config.get("goodhart_tolerance")}).')
  for record in alarms:
    alarm = record['goodhart']
    then = {'rollback': f'; round {record["cycle"] + 1} started from the adapters of '
            + ('the base model' if alarm.get('rollback_to') == 0
               else f'round {alarm.get("rollback_to")}'),
            'stop': '; the run stopped here'}.get(alarm['action'], '')
    lines.append(f'- **Round {record["cycle"]}** ({alarm["action"]}): '
                 + '; '.join(alarm['reasons']) + then)
  lines += ['', '## Label-free early warning', '',
            'Signals the loop has without ground truth (`early_warning.py`), AFTER phase; an '
            f'alarm at {early_warning.ALARM_AT} or more signals past their limits.', '',
            '| round | agreement | KL from base | distinct | option drift | signals | alarm |',
            '|---|---|---|---|---|---|---|']
  for record in rounds:
    get = metrics_lib.get
    lines.append(f'| {record["cycle"]} | {fmt(get(record, "signal", "agreement_rate"), ".2f")} | '
                 f'{fmt(get(record, "signal", "kl_from_base"), ".3f")} | '
                 f'{fmt(get(record, "signal", "distinct_ratio"), ".2f")} | '
                 f'{fmt(get(record, "signal", "option_count_drift"), "+.2f")} | '
                 f'{"; ".join(record.get("early_warning") or []) or "-"} | '
                 f'{"yes" if get(record, "signal", "alarm") else "no"} |')
  tools = _tools(rounds)
  if tools:
    lines += ['', '## Held-out measures per tool (first evaluated -> last evaluated)', '',
              '| tool | ' + ' | '.join(m.label for m in metrics_lib.HELDOUT_ROWS) + ' |',
              '|---|' + '---|' * len(metrics_lib.HELDOUT_ROWS)]
    for tool in tools:
      cells = []
      for metric in metrics_lib.HELDOUT_ROWS:
        series = metrics_lib.heldout_series(rounds, f'{metric.key}/{tool}')
        cells.append(f'{fmt(series[0][1], metric.spec)} (round {series[0][0]}) -> '
                     f'{fmt(series[-1][1], metric.spec)} (round {series[-1][0]})'
                     if series else 'n/a')
      lines.append(f'| {tool} | ' + ' | '.join(cells) + ' |')
  lines += ['', f'![Goodhart plot]({PLOT_FILE})', '',
            'Every generated row (BEFORE, AFTER, held-out) is in `rows/round_NNN_<phase>.jsonl`'
            ' with its reconstruction, rating, score, keep decision and validator verdict.', '']
  return '\n'.join(lines)


def plot(rounds: list[dict], path) -> pathlib.Path:
  """Four panels: intrinsic side, real side, both as change from the start, indicators."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt

  get = metrics_lib.get
  cycles = [int(r['cycle']) for r in rounds]
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
  ax = axes[0, 0]
  ax.plot(cycles, [get(r, 'before', 'mean_score') for r in rounds], 'o-',
          label='intrinsic score (BEFORE)')
  ax.plot(cycles, [metrics_lib.after_value(rounds, i, 'mean_score')[0] for i in
                   range(len(rounds))], 's--', label='intrinsic score (AFTER, or next BEFORE)')
  ax2 = ax.twinx()
  ax2.plot(cycles, [get(r, 'before', 'acceptance_rate') for r in rounds], 'g^:',
           label='acceptance (BEFORE)')
  ax2.set_ylabel('acceptance')
  ax.set_title('What the loop sees')
  ax.set_xlabel('round')
  ax.set_ylabel('intrinsic score')
  _legend(ax, ax2, fontsize=8)
  ax = axes[0, 1]
  for metric, style in zip(metrics_lib.HELDOUT_ROWS, ('o-', 's--', 'd:', 'v-.')):
    series = metrics_lib.heldout_series(rounds, metric.key)
    ax.plot([s[0] for s in series], [s[1] for s in series], style, label=metric.label)
  ax.set_title('What it does not see: held-out real quality')
  ax.set_xlabel('round (0 = base model)')
  ax.set_ylim(-1 if metrics_lib.heldout_series(rounds, 'nlc2cmd') else 0, 1)  # NLC2CMD: [-1, 1].
  ax.legend()
  ax = axes[1, 0]
  start = get(rounds[0], 'before', 'mean_score') if rounds else None
  score = [(0, 0.0)] + [(c, metrics_lib.relative_change(
      start, metrics_lib.after_value(rounds, i, 'mean_score')[0])) for i, c in enumerate(cycles)]
  series = metrics_lib.heldout_series(rounds, 'quality')
  quality = [(c, metrics_lib.relative_change(series[0][1], v)) for c, v in series] \
      if series else []
  for points, style, label in ((score, 'o-', 'intrinsic score (AFTER vs BEFORE of round 1)'),
                               (quality, 's-', 'real quality (graded, vs base model)')):
    points = [(c, 100 * v) for c, v in points if v is not None]
    ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
  ax.axhline(0, color='grey', lw=0.8)
  ax.set_title('Change from the base model: the Goodhart gap')
  ax.set_xlabel('round')
  ax.set_ylabel('% change')
  ax.legend(fontsize=8)
  ax = axes[1, 1]
  for metric in metrics_lib.INDICATOR_ROWS:
    if metric.key.endswith(('mean_option_count', 'mean_tokens')):
      continue
    series = metrics_lib.heldout_series(rounds, metric.key)
    ax.plot([s[0] for s in series], [s[1] for s in series], 'o-', label=metric.label)
  ax3 = ax.twinx()
  series = metrics_lib.heldout_series(rounds, 'indicator/mean_option_count')
  ax3.plot([s[0] for s in series], [s[1] for s in series], 'k*--', label='options/cmd')
  ax3.set_ylabel('options per command')
  ax.set_title('Gaming indicators (held-out)')
  ax.set_xlabel('round (0 = base model)')
  ax.set_ylabel('rate')
  _legend(ax, ax3, fontsize=7)
  from matplotlib.ticker import MaxNLocator
  for ax in axes.flat:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return files_lib.save_figure_atomic(fig, path, dpi=110)


def _legend(ax, twin, **kwargs):
  handles, labels = ax.get_legend_handles_labels()
  more_handles, more_labels = twin.get_legend_handles_labels()
  ax.legend(handles + more_handles, labels + more_labels, **kwargs)


def write(run_dir) -> tuple[pathlib.Path, pathlib.Path]:
  """Writes report.md and goodhart.png into `run_dir`; returns their paths."""
  run_dir = pathlib.Path(run_dir)
  config, rounds = load_rounds(run_dir)
  if not rounds:
    raise UserError(f'{run_dir} has no completed round to report on')
  report = files_lib.write_text_atomic(run_dir / REPORT_FILE, markdown(config, rounds))
  return report, plot(rounds, run_dir / PLOT_FILE)


def _threshold(rounds: list[dict], config: dict) -> str:
  """The threshold as used: calibrated on round 1 (`--target_acceptance`) or as given."""
  calibration = (rounds[0].get('calibration') if rounds else None) or {}
  if 'threshold' in calibration:
    return (f'threshold {calibration["threshold"]:.4f}, calibrated on round 1\'s BEFORE to keep '
            f'{calibration["kept_fraction"]:.1%} for a target of '
            f'{calibration["target_acceptance"]:.1%}')
  return f'threshold {config.get("threshold")}'
