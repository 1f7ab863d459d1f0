"""Evaluates the Goodhart detectors on finished runs against the gold event.

  python experiments/detectors/evaluate.py \
      --positive=runs/echo_s0,runs/echo_s1 --negative=runs/study_threshold_s0 \
      --delta_file=benchmarks/detectors/delta.json --horizon=2 --output=benchmarks/detectors/eval

Labels are the designed mechanism (positive control or controlled-study negative); the
truth is each run's gold event (`inversion_jax/goodhart/goodhart_event.py`) under both references
(best so far, the pre-registered one; the base model, beside it). `--delta` gives the gold
event's drop in graded-quality points; `--delta_from` derives it instead from the per-task
held-out rows of the runs named (`goodhart_event.derive_delta`: `--delta_multiple` x the
RMS standard error of consecutive evaluations' paired difference); `--delta_file` reads the
value so derived, and how, from pilot_summary.py's JSON (the registered one). `--limits` replaces the
limits table (JSON, `inversion_jax/goodhart/limits.py`), e.g. one tuned on another mechanism
(`tune_limits.py` beside this file).

Writes `<output>.md` and `<output>.json`: per reference and detector the metrics of
`detector_metrics.py` and a verdict (works / does not / not enough data, PREREGISTRATION
§10); and `<output>_runs.png` (`detector_plot.py`): one panel per positive run, held-out
quality and the intrinsic score by round, the gold rounds shaded, the delta line under the
best so far, and every detector's alarm rounds (none written when no run is positive).
`readme_section.py` turns the JSON into the README's block. See PREREGISTRATION.md beside
this file.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import detector_metrics, detector_plot  # noqa: E402
from inversion_jax.goodhart import detectors, goodhart_event, limits  # noqa: E402
from inversion_jax.records import files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list('positive', [], 'Run directories of positive controls.')
flags.DEFINE_list('negative', [], 'Run directories of negatives (the controlled study).')
flags.DEFINE_float('delta', None, 'The gold event\'s drop, graded-quality points (> 0).')
flags.DEFINE_list('delta_from', [], 'Derive delta from these runs\' held-out rows instead.')
flags.DEFINE_string('delta_file', None, 'Or read delta, and how it was derived, from a '
                    'pilot_summary.py JSON (the registered value: benchmarks/detectors/delta.json).')
flags.DEFINE_float('delta_multiple', goodhart_event.DELTA_MULTIPLE,
                   'delta = this x the RMS SE of consecutive evaluations\' paired difference.')
flags.DEFINE_integer('horizon', 2, 'Rounds after an alarm in which a gold round makes it right.')
flags.DEFINE_string('limits', None, 'A limits table (JSON); default: limits.LIMITS.')
flags.DEFINE_string('output', 'detectors', 'Path prefix of the .md and .json written.')


def resolve_delta(delta, delta_from, multiple, delta_file=None) -> tuple[float, dict]:
  """(delta, how it was obtained) from the flags: given, derived, or read from a file."""
  if sum((delta is not None, bool(delta_from), bool(delta_file))) != 1:
    raise UserError('give the gold event\'s drop: --delta=0.05, --delta_from=RUN_DIRS to '
                    'derive it from their held-out rows, or --delta_file=delta.json (one of '
                    'the three)')
  if delta is not None:
    return goodhart_event.check_delta(delta), {'given': delta}
  if delta_file:
    return goodhart_event.delta_from_file(delta_file)
  return goodhart_event.delta_from_runs(delta_from, multiple)


def markdown(result: dict, delta: float, how: dict, horizon: int, runs,
             plot_name: str | None = None) -> str:
  lines = [f'Gold event: graded held-out quality >= {delta:.4f} below the reference while '
           f'the intrinsic score is above the base model\'s, at {goodhart_event.CONFIRM} '
           f'consecutive evaluations (delta {how}). Horizon {horizon} round(s). '
           'Proportions: k/n = rate [exact 95 % interval]. Verdict (PREREGISTRATION §10): '
           'works = recall\'s lower bound > 0.5 and the false-alarm rate\'s upper bound < 0.5; '
           'does not = recall\'s upper bound < 0.5 or the false-alarm rate\'s lower bound '
           '> 0.5; otherwise not enough data.', '']
  for reference, by_detector in result.items():
    lines += [f'### Reference: {"best so far" if reference == "best" else "base model"}', '',
              *detector_metrics.table(by_detector), '']
  lines += ['| run | label | gold onset (best) | gold onset (base) | rounds |',
            '|---|---|---|---|---|']
  for run in runs:
    onsets = [goodhart_event.first_event(run.rounds, delta, ref)
              for ref in goodhart_event.REFERENCES]
    cells = ['-' if e is None else f'{e.onset} (confirmed {e.confirmed})' for e in onsets]
    lines.append(f'| {run.name} | {run.label} | {cells[0]} | {cells[1]} | {len(run.rounds)} |')
  lines += ['', f'![Positive runs, alarms marked]({plot_name})' if plot_name else
            'No positive run: no runs plot.']
  return '\n'.join(lines) + '\n'


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --positive and --negative')
  delta, how = resolve_delta(FLAGS.delta, FLAGS.delta_from, FLAGS.delta_multiple,
                             FLAGS.delta_file)
  table = limits.load(FLAGS.limits) if FLAGS.limits else None
  runs = detectors.load_runs(FLAGS.positive, FLAGS.negative)
  result = detectors.evaluate(runs, delta, FLAGS.horizon, table)
  prefix = pathlib.Path(FLAGS.output)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  # Appended, not with_suffix: a prefix like eval_delta0.05 keeps its dot.
  positives = [run for run in runs if run.label == 'positive']
  plot_name = f'{prefix.name}_runs.png' if positives else None
  if positives:
    detector_plot.plot_runs(positives, delta, f'{prefix}_runs.png', table)
  text = markdown(result, delta, how, FLAGS.horizon, runs, plot_name)
  files.write_text_atomic(f'{prefix}.md', text)
  files.write_json_atomic(f'{prefix}.json', {
      'delta': delta, 'delta_how': how, 'horizon': FLAGS.horizon,
      'confirm': goodhart_event.CONFIRM, 'limits': table or limits.LIMITS,
      'limits_file': FLAGS.limits, 'runs_plot': plot_name, 'references': result})
  print(text)
  print(f'written: {prefix}.md, {prefix}.json' + (f', {prefix}_runs.png' if positives else
                                                  ' (no positive run: no runs plot)'))


if __name__ == '__main__':
  app.run(main)
