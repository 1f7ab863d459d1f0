"""Compares runs: per group (same settings, different seeds) the mean and a 95 % CI.

  python experiments/compare_runs.py runs/v1_s0 runs/v1_s1 runs/v2_s0 runs/v2_s1 \
      --output=benchmarks/compare

Groups are runs whose settings agree except for the seed (and name/output); groups may
differ only in the filter, so the comparison is V1 against V2 and nothing else: any other
difference is refused with the setting that differs, and so is a run given twice.

Held-out measures (`metrics.HELDOUT_ROWS`: graded, strict, NLC2CMD) are computed per
(task, seed) from each run's held-out rows (`rows/round_000_heldout.jsonl`, the base model,
and the last evaluated round's): per group the base, last and change means with 95 %
intervals from a paired bootstrap over tasks and seeds (`quality/task_stats.py`), and the
difference of every other group from the first, task by task on the same seeds, with its
own interval and its sign per seed. The run-level table below it (intrinsic score,
acceptance, loss, indicators: one number per run) keeps a Student-t interval over seeds
(n - 1 degrees of freedom; undefined with one seed). Writes `<output>.md`, `<output>.json`
and `<output>.png` (one curve per group with its band).
"""

import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from scipy import stats  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import goodhart_event, metrics  # noqa: E402
from inversion_jax.loop import experiment  # noqa: E402
from inversion_jax.quality import task_stats  # noqa: E402
from inversion_jax.records import files  # noqa: E402
from inversion_jax.records import history, report  # noqa: E402

FLAGS = flags.FLAGS
DEFAULTS = experiment.RunConfig().as_dict()
flags.DEFINE_string('output', 'compare', 'Path prefix of the .md, .json and .png written.')
flags.DEFINE_integer('resamples', task_stats.RESAMPLES, 'Bootstrap resamples.')
flags.DEFINE_integer('last_rounds', 1, 'Per task, average the last K evaluated rounds (the '
                     'study\'s primary outcome: 3) before comparing with the base model.')
flags.DEFINE_list('differ', [], 'Settings besides the filter the groups may differ in, e.g. '
                  'on_goodhart to compare a monitored rerun with the same seed unmonitored.')

IGNORED = ('seed', 'name', 'output', 'resume', 'cycles', 'eval_every', 'eval_tasks',
           'eval_split')
ALLOWED_TO_DIFFER = ('filter', 'repro_m', 'repro_similarity', 'repro_weights', 'repro_layer')


def measures(rounds: list[dict]) -> dict[str, float | None]:
  """Changes base -> last round of one run (relative where the summary is relative)."""
  s = history.summarize(rounds)
  get = metrics.get

  def delta(a, b):
    return None if a is None or b is None else b - a

  out = {
      'intrinsic score change (%)': s['score_relative_change_pct'],
      'acceptance change (points)': _pct(delta(s['first_before_acceptance'],
                                               s['last_after_acceptance'])),
      'train loss change': delta(s['first_train_loss'], s['last_train_loss']),
      'graded quality change (%)': s.get('quality_relative_change_pct'),
      'strict quality change (points)': _pct(delta(s.get('heldout_strict_first'),
                                                   s.get('heldout_strict_last'))),
      'Goodhart gap (points)': _pct(s.get('goodhart_gap')),
  }
  for metric in metrics.HELDOUT_ROWS:
    if metric.key not in ('quality', 'strict'):
      out[f'{metric.label} change'] = delta(s.get(f'heldout_{metric.key}_first'),
                                            s.get(f'heldout_{metric.key}_last'))
  for metric in metrics.INDICATOR_ROWS:
    out[f'{metric.label} change'] = delta(s.get(f'heldout_{metric.key}_first'),
                                          s.get(f'heldout_{metric.key}_last'))
  out['rounds'] = float(len(rounds))
  out['V2 removed (BEFORE, mean per round)'] = _mean_or_none(
      [get(r, 'before', 'removed_by_reproducibility') for r in rounds])
  return out


def _pct(value):
  return None if value is None else 100.0 * value


def _mean_or_none(values):
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def mean_ci(values) -> tuple[float | None, float | None, float | None, int]:
  """(mean, low, high, n) with a Student-t 95 % interval; None where undefined."""
  values = np.asarray([v for v in values if v is not None], np.float64)
  if not len(values):
    return None, None, None, 0
  mean = float(values.mean())
  if len(values) < 2:
    return mean, None, None, 1
  half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
  return mean, mean - half, mean + half, len(values)


def group_runs(run_dirs, differ=()) -> dict[str, list[tuple[str, dict, list]]]:
  """Group label -> [(dir, config, rounds)]; refuses groups differing beyond the filter
  (and the settings in `differ`)."""
  allowed = ALLOWED_TO_DIFFER + tuple(differ)
  for setting in differ:
    if setting not in DEFAULTS:
      raise UserError(f'--differ={setting}: no such setting; use RunConfig names like '
                      'on_goodhart')
  resolved = [pathlib.Path(d).resolve() for d in run_dirs]
  twice = sorted({str(d) for d in resolved if resolved.count(d) > 1})
  if twice:
    raise UserError(f'{twice[0]} is given twice; give each run once')
  groups: dict[str, list] = {}
  keys: dict[str, dict] = {}
  for run_dir in run_dirs:
    config, rounds = report.load_rounds(run_dir)
    if not rounds:
      raise UserError(f'{run_dir} has no completed round')
    # Settings a run predates count as their defaults (the behaviour it had).
    config = json.loads(json.dumps(files.jsonable(DEFAULTS))) | config
    key = {k: v for k, v in config.items() if k not in IGNORED}
    identity = json.dumps(key, sort_keys=True)
    groups.setdefault(identity, []).append((str(run_dir), config, rounds))
    keys[identity] = key
  for identity, runs in groups.items():
    seeds = [config.get('seed') for _, config, _ in runs]
    repeated = sorted({str(seed) for seed in seeds if seeds.count(seed) > 1})
    if repeated:
      raise UserError(f'seed {repeated[0]} appears twice among runs with the same settings '
                      f'({", ".join(d for d, _, _ in runs)}): the same run given twice?')
  labels = list(keys)
  for other in labels[1:]:
    for setting in sorted(set(keys[labels[0]]) | set(keys[other])):
      if setting in allowed:
        continue
      if keys[labels[0]].get(setting) != keys[other].get(setting):
        raise UserError(
            f'runs differ in {setting!r} ({keys[labels[0]].get(setting)!r} vs '
            f'{keys[other].get(setting)!r}), not only in the filter; compare runs that '
            'differ in the filter (and seed) alone, or name the setting in --differ')
  return {_label(keys[identity], differ): runs for identity, runs in groups.items()}


def early_warning_evaluation(groups, delta: float = 0.05,
                             confirm: int = goodhart_event.CONFIRM) -> dict:
  """Precision, recall and lead time (rounds) of the label-free alarms against the gold
  event (`goodhart_event.gold_rounds`; `experiments/detectors/evaluate.py` has them all).

  Precision: early alarms followed, in the same run at that round or later, by a gold
  alarm / early alarms. Recall: runs with a gold alarm whose first early alarm came at or
  before the first gold one / runs with a gold alarm. Lead time: first gold round minus
  first early round, over runs that have both (negative = the early alarm came late).
  """
  alarms = hits = gold_runs = caught = 0
  leads = []
  for runs in groups.values():
    for _, _, rounds in runs:
      gold = goodhart_event.gold_rounds(rounds, delta, confirm=confirm)
      early = [int(r['cycle']) for r in rounds if metrics.get(r, 'signal', 'alarm')]
      alarms += len(early)
      hits += sum(any(g >= e for g in gold) for e in early)
      if gold:
        gold_runs += 1
        caught += bool(early) and early[0] <= gold[0]
      if gold and early:
        leads.append(gold[0] - early[0])
  return {'early_alarms': alarms, 'precision': hits / alarms if alarms else None,
          'runs_with_gold_alarm': gold_runs, 'recall': caught / gold_runs if gold_runs else None,
          'lead_time_rounds': leads, 'mean_lead_time': float(np.mean(leads)) if leads else None,
          'delta': delta}


def _label(key: dict, differ=()) -> str:
  extra = ''.join(f', {setting}={key.get(setting)}' for setting in differ)
  if key.get('filter') == 'reproducibility':
    return (f'V2 (m={key.get("repro_m")}, s={key.get("repro_similarity")}, '
            f'w={key.get("repro_weights")}{extra})')
  return f'V1 ({key.get("filter")}{extra})'


def table(groups) -> dict:
  out = {}
  for label, runs in groups.items():
    per_run = [measures(rounds) for _, _, rounds in runs]
    out[label] = {'runs': [d for d, _, _ in runs],
                  'seeds': [c.get('seed') for _, c, _ in runs],
                  'measures': {name: dict(zip(('mean', 'ci_low', 'ci_high', 'n'),
                                              mean_ci([m[name] for m in per_run])))
                               for name in per_run[0]},
                  'per_run': per_run}
  return out


def heldout_references() -> dict[str, list[str]]:
  """Task id -> reference commands, to score rows kept before NLC2CMD was recorded."""
  from inversion_jax.quality.heldout import builder  # Local: TFDS imports slowly.
  return {r['id']: r['references'] for r in builder.read_source()}


def task_table(groups, resamples: int = task_stats.RESAMPLES, references=None,
               last_rounds: int = 1) -> dict:
  """Per (task, seed) held-out measures: each group's intervals, then the paired
  differences of every other group from the first."""
  keys = [m.key for m in metrics.HELDOUT_ROWS]
  data = {}  # label -> key -> part -> {seed: {task: value}}
  for label, runs in groups.items():
    for run_dir, config, _ in runs:
      for key, parts in task_stats.run_changes(run_dir, keys, references,
                                               last_rounds).items():
        for part in ('base', 'last', 'change'):
          data.setdefault(label, {}).setdefault(key, {}).setdefault(part, {})[
              config.get('seed')] = parts[part]
  arms = {label: {key: {part: task_stats.bootstrap(task_stats.matrix(by_seed)[0],
                                                   resamples).to_json()
                        for part, by_seed in parts.items()}
                  for key, parts in measures_.items()}
          for label, measures_ in data.items()}
  labels = list(data)
  differences = {}
  for label in labels[1:]:
    for key in data[labels[0]]:
      if key in data[label] and set(data[labels[0]][key]['change']) & set(
          data[label][key]['change']):
        paired = task_stats.paired_difference(data[labels[0]][key]['change'],
                                              data[label][key]['change'], resamples)
        differences.setdefault(f'{label} - {labels[0]}', {})[key] = paired | {
            'interval': paired['interval'].to_json()}
  return {'arms': arms, 'differences': differences, 'resamples': resamples,
          'confidence': task_stats.CONFIDENCE, 'last_rounds': last_rounds}


def markdown(result: dict) -> str:
  labels = list(result)
  names = list(result[labels[0]]['measures'])
  lines = ['| measure | ' + ' | '.join(f'{l} (n={len(result[l]["runs"])})' for l in labels)
           + ' |', '|---|' + '---|' * len(labels)]
  for name in names:
    cells = []
    for label in labels:
      m = result[label]['measures'][name]
      if m['mean'] is None:
        cells.append('n/a')
      elif m['ci_low'] is None:
        cells.append(f'{m["mean"]:+.3f}')
      else:
        cells.append(f'{m["mean"]:+.3f} [{m["ci_low"]:+.3f}, {m["ci_high"]:+.3f}]')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  lines.append('Run level: mean over seeds [Student-t 95 % CI over seeds only, no task '
               'variance]; changes are base model (round 1 BEFORE for the intrinsic side, '
               'round 0 held-out for real quality) -> last round.')
  return '\n'.join(lines) + '\n'


def plot(groups, path):
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt
  from matplotlib.ticker import MaxNLocator

  def after_scores(rs):  # AFTER, or the next BEFORE in a round without AFTER (--after_every).
    values = [(int(r['cycle']), metrics.after_value(rs, i, 'mean_score')[0])
              for i, r in enumerate(rs)]
    return [(c, v) for c, v in values if v is not None]

  panels = [('intrinsic score (AFTER)', after_scores)]
  panels += [(f'held-out {m.label}', lambda rs, key=m.key: metrics.heldout_series(rs, key))
             for m in metrics.HELDOUT_ROWS]
  fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
  for ax, (title, series_of) in zip(axes, panels):
    for label, runs in groups.items():
      curves = [dict(series_of(rounds)) for _, _, rounds in runs]
      xs = sorted(set().union(*curves))
      means, lows, highs = [], [], []
      for x in xs:
        mean, low, high, _ = mean_ci([c.get(x) for c in curves])
        means.append(mean)
        lows.append(mean if low is None else low)
        highs.append(mean if high is None else high)
      line, = ax.plot(xs, means, 'o-', label=label)
      ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
    ax.set_title(title)
    ax.set_xlabel('round')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  files.save_figure_atomic(fig, path, dpi=110)


def _show(value):
  return 'n/a' if value is None else f'{value:.2f}'


def check_distinct(run_dirs):
  """The same run given twice (or through a link) would count as two seeds."""
  seen = {}
  for run_dir in run_dirs:
    real = run_dir.resolve()
    if real in seen:
      raise UserError(f'{run_dir} and {seen[real]} are the same run; give each run once')
    seen[real] = run_dir


def output_prefix(output: str) -> pathlib.Path:
  """The --output prefix, its directory made and every file checked writable, before work."""
  prefix = pathlib.Path(output).expanduser()
  try:
    prefix.parent.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise files.write_error(prefix.parent, error) from None
  for suffix in ('.md', '.json', '.png'):
    files.check_output_file(prefix.with_suffix(suffix))
  return prefix


@exit_on_user_error
def main(argv):
  run_dirs = [pathlib.Path(a) for a in argv[1:]]
  if not run_dirs:
    raise UserError('give the run directories to compare, e.g. runs/v1_s0 runs/v2_s0')
  for run_dir in run_dirs:
    if not run_dir.is_dir():
      raise UserError(f'{run_dir} is not a run directory')
  check_distinct(run_dirs)
  prefix = output_prefix(FLAGS.output)
  groups = group_runs(run_dirs, FLAGS.differ)
  result = table(groups)
  tasks = task_table(groups, FLAGS.resamples, heldout_references(), FLAGS.last_rounds)
  warning = early_warning_evaluation(groups)
  text = task_stats.markdown(tasks) + '\n' + markdown(result) + (
      f'\nLabel-free early warning against the gold event (delta '
      f'{warning["delta"]}): {warning["early_alarms"]} early alarm(s), precision '
      f'{_show(warning["precision"])}; {warning["runs_with_gold_alarm"]} run(s) with a gold '
      f'alarm, recall {_show(warning["recall"])}; lead time (rounds) '
      f'{warning["lead_time_rounds"] or "n/a"}.\n')
  files.write_text_atomic(prefix.with_suffix('.md'), text)
  files.write_json_atomic(prefix.with_suffix('.json'), {'groups': result,
                                                         'per_task': tasks,
                                                         'early_warning': warning})
  plot(groups, prefix.with_suffix('.png'))
  print(text)
  print(f'written: {prefix}.md, {prefix}.json, {prefix}.png')


if __name__ == '__main__':
  app.run(main)
