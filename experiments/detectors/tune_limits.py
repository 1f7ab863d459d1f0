"""Tunes the signals' limits on one mechanism's runs (PREREGISTRATION.md §8).

  python experiments/detectors/tune_limits.py --positive=runs/A_s0,runs/A_s1,runs/A_s2 \
      --negative=runs/v1_s0,runs/v2_s0,runs/r_s0 --delta=0.059 \
      --output=benchmarks/detectors/tuned_on_A.json

Per signal alone: the limit, among the values its change from round 1 BEFORE took in its
table's direction (`--limits`: the registered table by default, whose directions are the
gaming ones), that catches the most runs with a gold event (best-so-far reference) at or
before the onset with no false alarm among the negatives without one; ties to the largest
(`inversion_jax/goodhart/limit_tuning.py`). Writes the table (`--output`, for
`evaluate.py --limits=...` on the other mechanism's runs) and a .md beside it that explains
each limit chosen. No number from these runs is a held-out result.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import detector_metrics, detectors, early_warning  # noqa: E402
from inversion_jax.goodhart import goodhart_event, limit_tuning, limits  # noqa: E402
from inversion_jax.records import files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list('positive', [], 'Run directories of one mechanism\'s positive controls.')
flags.DEFINE_list('negative', [], 'Run directories of negatives (the controlled study, seed 0).')
flags.DEFINE_float('delta', None, 'The gold event\'s drop, graded-quality points (> 0).')
flags.DEFINE_string('limits', None, 'A limits table (JSON) giving the signals, their '
                    'directions and the limits kept where a signal never moved; default: '
                    'limits.LIMITS.')
flags.DEFINE_string('output', 'tuned_limits.json', 'The limits table written (.json); '
                    'the .md beside it explains each limit.')

REFERENCE = 'best'  # The pre-registered (primary) gold reference.


def markdown(result: dict, runs, delta: float, output_name: str) -> str:
  counts = {label: sum(run.label == label for run in runs) for label in detector_metrics.LABELS}
  lines = [f'Limits tuned (`{output_name}`, PREREGISTRATION §8) on {counts["positive"]} '
           f'positive and {counts["negative"]} negative run(s); gold event delta {delta:.4f}, '
           f'reference {REFERENCE} so far. Per signal alone: among the values its change from '
           'round 1 BEFORE took in the table\'s direction, the limit that catches the most runs '
           'with a gold event at or before the onset (recall) with no false alarm among the '
           'negatives without one; ties to the largest. A signal alarms when its change '
           f'strictly exceeds the limit; the early warning keeps {early_warning.ALARM_AT} '
           'signals over these limits. Numbers here are in-sample, never a held-out result.',
           '', '| signal | direction | registered | tuned | recall | false-alarm rate | '
           'values seen | why |', '|---|---|---|---|---|---|---|---|']
  for name, s in result['signals'].items():
    lines.append(f'| {name} | {s["direction"]} | {s["default"]:.4g} | {s["limit"]:.4g} | '
                 f'{detector_metrics.cell(s["recall"])} | '
                 f'{detector_metrics.cell(s["false_alarm_rate"])} | {s["candidates"]} | '
                 f'{s["why"]} |')
  lines += ['', '| run | label |', '|---|---|']
  lines += [f'| {run.name} | {run.label} |' for run in runs]
  return '\n'.join(lines) + '\n'


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --positive and --negative')
  if FLAGS.delta is None:
    raise UserError('give the gold event\'s drop: --delta=0.05 (graded-quality points)')
  delta = goodhart_event.check_delta(FLAGS.delta)
  output = pathlib.Path(FLAGS.output)
  if output.suffix != '.json':
    raise UserError(f'--output={output} must name a .json file (the limits table), e.g. '
                    'tuned_on_A.json')
  output.parent.mkdir(parents=True, exist_ok=True)
  files.check_output_file(output)
  runs = detectors.load_runs(FLAGS.positive, FLAGS.negative)
  table = limits.load(FLAGS.limits) if FLAGS.limits else None
  result = limit_tuning.tune(runs, delta, table, reference=REFERENCE)
  text = markdown(result, runs, delta, output.name)
  files.write_json_atomic(output, result['table'])
  files.write_text_atomic(output.with_suffix('.md'), text)
  print(text)
  print(f'written: {output}, {output.with_suffix(".md")}')


if __name__ == '__main__':
  app.run(main)
