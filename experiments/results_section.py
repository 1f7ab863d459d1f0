"""The study's results block from its compare_runs JSON files (numbers are read, not typed).

  python experiments/results_section.py benchmarks/study2/compare.json \
      benchmarks/study2/compare_v2_first.json --readme=benchmarks/RESULTS.md

Replaces the text between `<!-- results:start -->` and `<!-- results:end -->` in
benchmarks/RESULTS.md (or the file given with --readme); with --summary=README.md, also the
short version between `<!-- study:start -->` and `<!-- study:end -->` there (the decision,
the paired differences, three run-level rows beside the original's). Each arm is named by its filter
(threshold: V1, random_matched: R, reproducibility: V2), not by compare_runs' label, which
calls every non-V2 arm "V1 (...)". Every paired per-task difference in the files is listed
once. With a V1 and an R arm the controlled study's pre-registered decision
(experiments/study/PREREGISTRATION.md, "Decision rule" and its Changes) is applied: the
interval of Delta(V1 - R) against 0 and -MARGIN, and V1's intrinsic score over the last
rounds against R's, paired by seed, read from the runs' progress.json.
"""

import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import metrics  # noqa: E402
from inversion_jax.records import files, report  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('readme', 'benchmarks/RESULTS.md',
                    'The markdown file whose results block is replaced.')
flags.DEFINE_string('note', '', 'Markdown put under the tables (the study state, the command).')
flags.DEFINE_string('summary', '', 'A markdown file (README.md) whose study block gets the '
                    'short version; empty: none.')

START, END = '<!-- results:start -->', '<!-- results:end -->'
SUMMARY_START, SUMMARY_END = '<!-- study:start -->', '<!-- study:end -->'
SUMMARY_ROWS = ('intrinsic score change (%)', 'acceptance change (points)',
                'graded quality change (%)')
MARGIN = 0.025  # Graded points: the pre-registered margin (~10 % of the base model's quality).
ARMS = ('R', 'V1', 'V2')  # Display order: the control first.
# The original's published figures (its README / RESULTS.md: one run, one seed).
ORIGINAL = {'intrinsic score change (%)': ('+18.1', 'n/a'),
            'acceptance change (points)': ('60.7 -> 88.0 % (+27.3)', 'n/a'),
            'graded quality change (%)': ('-11 (undisclosed measure)', '-0.2')}
ROWS = ('intrinsic score change (%)', 'acceptance change (points)', 'train loss change',
        'graded quality change (%)', 'strict quality change (points)', 'NLC2CMD score change',
        'Goodhart gap (points)',
        'options/cmd change', 'unknown opt change', 'repeated opt change', 'prose change',
        'distinct change', 'tokens/cmd change')
MEASURES = {m.key: m.label for m in metrics.HELDOUT_ROWS}


def arm_of(label: str) -> str:
  """The arm a compare_runs group label names: its filter, not its 'V1 (...)' prefix."""
  if label.startswith('V2'):
    return 'V2'
  if '(random_matched' in label:
    return 'R'
  if '(threshold' in label:
    return 'V1'
  return label


def cell(measure: dict) -> str:
  if measure is None or measure.get('mean') is None:
    return 'n/a'
  text = f"{measure['mean']:+.2f}"
  if measure.get('ci_low') is not None:
    text += f" [{measure['ci_low']:+.2f}, {measure['ci_high']:+.2f}]"
  return text + f" (n={measure['n']})"


def interval_text(interval: dict, spec: str = '+.3f') -> str:
  return f'{interval["mean"]:{spec}} [{interval["low"]:{spec}}, {interval["high"]:{spec}}]'


def differences(results: list[dict]) -> dict[tuple[str, str], dict]:
  """(arm b, arm a) -> {measure: paired difference b - a}, each pair once over the files."""
  out = {}
  for result in results:
    for name, by_measure in ((result.get('per_task') or {}).get('differences') or {}).items():
      later, first = name.split(' - ', 1)
      pair = (arm_of(later), arm_of(first))
      if pair not in out and pair[::-1] not in out:
        out[pair] = by_measure
  return out


def late_score(rounds: list[dict], last_rounds: int) -> float | None:
  """Mean intrinsic score of the adapters of a run's last `last_rounds` rounds (None if any
  is missing): the round's AFTER, or the next round's BEFORE where AFTER was not run."""
  values = [metrics.after_value(rounds, i, 'mean_score')[0] for i in range(len(rounds))]
  values = values[-last_rounds:]
  if not values or any(v is None for v in values):
    return None
  return float(np.mean(values))


def load_runs(result: dict) -> dict[str, list[dict]]:
  """run dir -> its rounds, for every run of the compare file whose directory is here
  (read once: the decision and the minutes both use them)."""
  dirs = [d for group in result['groups'].values() for d in group['runs']]
  return {d: report.load_rounds(d)[1] for d in dirs if pathlib.Path(d).is_dir()}


def late_scores(group: dict, last_rounds: int, rounds: dict) -> dict:
  """seed -> late_score of each run of a compare_runs group (its run directories)."""
  return {seed: late_score(rounds[run_dir], last_rounds)
          for seed, run_dir in zip(group['seeds'], group['runs'])}


def wall_minutes(rounds: list[dict]) -> float | None:
  """A run's time in its rounds (the sum of their `timings.total`; process starts and
  restarts not counted), minutes; None when a round lacks it."""
  totals = [(r.get('timings') or {}).get('total') for r in rounds]
  return None if not totals or None in totals else sum(totals) / 60


def wall_line(result: dict, rounds: dict) -> str:
  """Each run's wall time, per arm in seed order, read from its progress.json."""
  parts = []
  for label, group in result['groups'].items():
    minutes = [wall_minutes(rounds[run_dir]) for run_dir in group['runs']]
    parts.append(f'{arm_of(label)} ' + ', '.join(
        'n/a' if m is None else f'{m:.0f}' for m in minutes))
  return ('Minutes in each run\'s rounds (the sum of their `timings.total`, process starts '
          'not counted; seeds in order): ' + '; '.join(parts) + '.')


def examples_trained(rounds: list[dict]) -> int | None:
  """A run's training examples over its rounds (the sum of `train/num_examples`); None
  when a round lacks it."""
  counts = [(r.get('metrics') or {}).get('train/num_examples') for r in rounds]
  return None if not counts or None in counts else int(sum(counts))


def examples_line(result: dict, rounds: dict) -> str:
  """Each run's training examples, per arm in seed order: the dose each arm received
  (V2 keeps its own count; R is matched to the threshold's, not to V2's)."""
  parts = []
  for label, group in result['groups'].items():
    counts = [examples_trained(rounds[run_dir]) for run_dir in group['runs']]
    parts.append(f'{arm_of(label)} ' + ', '.join('n/a' if c is None else str(c) for c in counts))
  return ('Examples trained on in each run (the sum of `train/num_examples` over its rounds; '
          'seeds in order): ' + '; '.join(parts) + '.')


def decide(interval: dict, score_difference: float | None, margin: float = MARGIN) -> str:
  """The pre-registered decision on Delta(V1 - R): its interval against 0 (with V1's
  late intrinsic score at or above R's) and against -margin; both can hold at once."""
  below_zero = interval['high'] < 0 and score_difference is not None and score_difference >= 0
  above_margin = interval['low'] > -margin
  if below_zero and above_margin:
    return 'a decline relative to R, smaller than the original\'s size'
  if below_zero:
    return 'supports the original\'s claim at 135M'
  if above_margin:
    return 'contradicts the original\'s claim at 135M'
  return 'inconclusive'


def decision_lines(result: dict, paired: dict, rounds: dict,
                   margin: float = MARGIN) -> list[str]:
  """The primary outcome, the score condition and the decision, in words and numbers."""
  by_arm = {arm_of(label): group for label, group in result['groups'].items()}
  last_rounds = result['per_task'].get('last_rounds', 1)
  scores = {arm: late_scores(by_arm[arm], last_rounds, rounds) for arm in ('V1', 'R')}
  seeds = [s for s in scores['V1'] if s in scores['R']
           and None not in (scores['V1'][s], scores['R'][s])]
  per_seed = [scores['V1'][s] - scores['R'][s] for s in seeds]
  score_difference = float(np.mean(per_seed)) if per_seed else None
  graded = paired['quality']
  interval = graded['interval']
  score_text = ('n/a (a run lacks the score of a late round)' if score_difference is None else
                f'{score_difference:+.3f} (per seed '
                + ', '.join(f'{s}: {d:+.3f}' for s, d in zip(seeds, per_seed)) + ')')
  return [
      f'- **Primary outcome, Delta(V1 - R)**, graded held-out quality averaged per task over '
      f'the last {last_rounds} evaluations, paired by task and seed: '
      f'**{interval_text(interval)}** ({interval["tasks"]} tasks x {interval["seeds"]} seeds, '
      f'{result["per_task"].get("resamples")} resamples; sign per seed {graded["signs"]}, '
      f'seeds {", ".join(str(s) for s in graded["seeds"])}).',
      f'- V1\'s intrinsic score over the same rounds minus R\'s: {score_text}.',
      f'- Decision (margin {margin}): **{decide(interval, score_difference, margin)}**.', '']


def heldout_lines(results: list[dict], paired: dict) -> list[str]:
  """Each arm's held-out change from the base model, then every paired difference."""
  arms = {}
  for result in results:
    for label, measures in ((result.get('per_task') or {}).get('arms') or {}).items():
      arms.setdefault(arm_of(label), measures)
  if not arms:
    return []
  lines = ['Held-out measures per (task, seed): mean [95 % paired bootstrap over tasks and '
           'seeds].', '', '| arm | measure | tasks x seeds | base model | last rounds | change |',
           '|---|---|---|---|---|---|']
  for arm in sorted(arms, key=lambda a: ARMS.index(a) if a in ARMS else len(ARMS)):
    for key, parts in arms[arm].items():
      change = parts['change']
      lines.append(f'| {arm} | {MEASURES.get(key, key)} | {change["tasks"]} x '
                   f'{change["seeds"]} | {interval_text(parts["base"], ".3f")} | '
                   f'{interval_text(parts["last"], ".3f")} | {interval_text(change)} |')
  if paired:
    lines += ['', 'Differences, task by task on the same seeds:', '',
              '| difference | measure | mean [95 % CI] | sign per seed |', '|---|---|---|---|']
    for (later, first), by_measure in paired.items():
      for key, difference in by_measure.items():
        lines.append(f'| {later} - {first} | {MEASURES.get(key, key)} | '
                     f'{interval_text(difference["interval"])} | {difference["signs"]} |')
  return lines + ['']


def arm_groups(result: dict) -> tuple[dict, list[str]]:
  """({arm: its group}, the arms in `ARMS` order, any others after)."""
  groups = {arm_of(label): group for label, group in result['groups'].items()}
  return groups, [a for a in ARMS if a in groups] + [a for a in groups if a not in ARMS]


def run_table(result: dict, rows, header: str) -> list[str]:
  """One line per run-level measure in `rows`: each arm (control first), the original's
  figures beside."""
  groups, arms = arm_groups(result)
  lines = [f'| {header} | ' + ' | '.join(f'ours {a}' for a in arms)
           + ' | original V1 | original V2 |', '|---|' + '---|' * (len(arms) + 2)]
  for row in rows:
    original = ORIGINAL.get(row, ('', ''))
    cells = ' | '.join(cell(groups[a]['measures'].get(row)) for a in arms)
    lines.append(f'| {row} | {cells} | {original[0]} | {original[1]} |')
  return lines


def run_level_lines(result: dict, rounds: dict) -> list[str]:
  """One number per run (mean over seeds, t interval over seeds), the original beside."""
  groups, arms = arm_groups(result)
  lines = run_table(result, ROWS, 'measure (base -> last round)')
  warning = result['early_warning']
  lines += ['', 'Run level: mean over seeds with a Student-t 95 % interval where n >= 2 (seeds '
            'only; the per-task tables carry the task variance); seeds '
            + ', '.join(f'{a} {groups[a]["seeds"]}' for a in arms) + '. Gold event '
            + (f"(delta {warning['delta']}): " if 'delta' in warning else
               f"(tolerance {warning['tolerance']}, relative): ")
            + f"{warning['runs_with_gold_alarm']} run(s) with one; label-free early warning: "
            f"{warning['early_alarms']} alarm(s), precision {warning['precision']}, recall "
            f"{warning['recall']}, lead times {warning['lead_time_rounds'] or 'n/a'}.", '']
  if all(d in rounds for group in result['groups'].values() for d in group['runs']):
    lines += [examples_line(result, rounds), '', wall_line(result, rounds), '']
  return lines


def opening(results: list[dict]) -> tuple[dict, dict, dict, list[str]]:
  """(first result, paired differences, its runs' rounds, the decision lines when the study
  has V1 and R): what the page and the README summary both start from."""
  first = results[0]
  paired = differences(results)
  rounds = load_runs(first)
  lines = []
  if ('V1', 'R') in paired and first.get('per_task'):
    lines += decision_lines(first, paired[('V1', 'R')], rounds)
  return first, paired, rounds, lines


def section(results: list[dict], note: str = '', plot: str | None = None) -> str:
  """The block: the decision (when the study has V1 and R), held-out tables, the
  trajectories' plot (a link relative to the page), run level."""
  first, paired, rounds, lines = opening(results)
  lines += heldout_lines(results, paired)
  if plot:
    legend = '; '.join(f'"{label}" is {arm_of(label)}' for label in first['groups'])
    lines += [f'![Each arm by round, mean over seeds with its band]({plot})', '',
              f'In the plot\'s legend (compare_runs\' labels): {legend}.', '']
  lines += run_level_lines(first, rounds)
  return '\n'.join(lines) + ('\n' + note.strip() + '\n' if note else '')


def summary(results: list[dict], note: str = '') -> str:
  """The short version for README: the decision with its numbers, the other paired
  differences of graded quality, and the run-level rows that the original published."""
  first, paired, _, lines = opening(results)
  others = [f'{later} - {first_arm}: {interval_text(by_measure["quality"]["interval"])} '
            f'(sign per seed {by_measure["quality"]["signs"]})'
            for (later, first_arm), by_measure in paired.items()
            if (later, first_arm) != ('V1', 'R') and 'quality' in by_measure]
  if others:
    lines += ['- The other paired differences of graded quality: ' + '; '.join(others) + '.',
              '']
  lines += run_table(first, SUMMARY_ROWS,
                     'run level, base -> last round (mean over seeds [t 95 %])')
  return '\n'.join(lines) + '\n' + ('\n' + note.strip() + '\n' if note else '')


def replace_block(path: pathlib.Path, start: str, end: str, body: str) -> None:
  """Writes body between the markers of path (atomically); the rest stays as it was."""
  text = path.read_text(encoding='utf-8')
  head, rest = text.split(start, 1)
  files.write_text_atomic(path, head + start + '\n' + body + end + rest.split(end, 1)[1])


def require_block(path: pathlib.Path, start: str, end: str) -> None:
  if not path.is_file():
    raise UserError(f'{path} does not exist; give the markdown file to write into')
  text = path.read_text(encoding='utf-8')
  if start not in text or end not in text:
    raise UserError(f'{path} has no {start} ... {end} block')


def read_result(path: pathlib.Path) -> dict:
  if not path.is_file():
    raise UserError(f'{path} does not exist; run experiments/compare_runs.py first')
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except ValueError as error:
    raise UserError(f'{path} is not compare_runs JSON ({error})') from None


@exit_on_user_error
def main(argv):
  if len(argv) < 2:
    raise UserError('give the compare_runs JSON file(s), e.g. benchmarks/study2/compare.json')
  results = [read_result(pathlib.Path(p)) for p in argv[1:]]
  readme = pathlib.Path(FLAGS.readme)
  require_block(readme, START, END)
  short = pathlib.Path(FLAGS.summary) if FLAGS.summary else None
  if short:  # Checked before anything is written: both files or neither.
    require_block(short, SUMMARY_START, SUMMARY_END)
  png = pathlib.Path(argv[1]).with_suffix('.png')  # compare_runs writes it beside its JSON.
  plot = os.path.relpath(png, readme.resolve().parent) if png.is_file() else None
  body = section(results, FLAGS.note, plot and pathlib.Path(plot).as_posix())
  replace_block(readme, START, END, body)
  if short:
    replace_block(short, SUMMARY_START, SUMMARY_END, summary(results, FLAGS.note))
  print(body)


if __name__ == '__main__':
  app.run(main)
