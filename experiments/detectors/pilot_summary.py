"""δ and each run's gold event, and nothing a detector saw: the registered δ, the pilot's view.

  python experiments/detectors/pilot_summary.py benchmarks/study2/{r,v1,v2}_s{0,1,2} \
      --output=benchmarks/detectors/delta      # the registered δ (PREREGISTRATION.md §3)
  python experiments/detectors/pilot_summary.py benchmarks/detectors/pilot/pilot_*_v1_s100 \
      --output=benchmarks/detectors/pilot/summary

δ = `--delta_multiple` x the RMS standard error of every consecutive pair of the given runs'
held-out evaluations (`goodhart_event`), then per run its held-out graded quality and
intrinsic score by round and its first gold event under both references; a run (its
mechanism) is kept when it has one under the primary reference (best so far). No detector's
alarms are computed here, so it can be read before a registration. `evaluate.py
--delta_file` reads the JSON's δ.
Writes `<output>.md` and `<output>.json`.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import detector_plot, detectors, goodhart_event  # noqa: E402
from inversion_jax.goodhart import metrics  # noqa: E402
from inversion_jax.records import files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_float('delta_multiple', goodhart_event.DELTA_MULTIPLE,
                   'delta = this x the RMS SE of consecutive evaluations\' paired difference.')
flags.DEFINE_string('output', 'pilot_summary', 'Path prefix of the .md and .json written.')


def run_summary(run: detectors.Run, delta: float) -> dict:
  """One pilot run: its series and its first gold event under each reference."""
  rounds = run.rounds
  events = {}
  for reference in goodhart_event.REFERENCES:
    event = goodhart_event.first_event(rounds, delta, reference)
    events[reference] = None if event is None else {'onset': event.onset,
                                                    'confirmed': event.confirmed}
  return {'run': run.name, 'rounds': len(rounds),
          'quality': metrics.heldout_series(rounds, 'quality'),
          'score': detector_plot.intrinsic_series(rounds),
          'events': events, 'kept': events['best'] is not None}


def _series(points) -> str:
  return ' '.join(f'{value:.3f}' for _, value in points) or 'n/a'


def markdown(delta: float, how: dict, runs: list[dict]) -> str:
  lines = [f'δ = {delta:.4f} ({how["multiple"]:g} x the RMS standard error of {how["pairs"]} '
           f'consecutive held-out pairs of {len(how["derived_from"])} run(s)). A mechanism is '
           'kept when its run has a gold event under the primary reference (best so far).', '',
           '| run | rounds | graded quality, round 0 on | intrinsic score, round 0 on | '
           'gold onset (best) | gold onset (base) | kept |', '|---|---|---|---|---|---|---|']
  for run in runs:
    onsets = ['-' if e is None else f'{e["onset"]} (confirmed {e["confirmed"]})'
              for e in (run['events'][r] for r in goodhart_event.REFERENCES)]
    lines.append(f'| {pathlib.Path(run["run"]).name} | {run["rounds"]} | '
                 f'{_series(run["quality"])} | {_series(run["score"])} | {onsets[0]} | '
                 f'{onsets[1]} | {"yes" if run["kept"] else "no"} |')
  return '\n'.join(lines) + '\n'


@exit_on_user_error
def main(argv):
  run_dirs = argv[1:]
  if not run_dirs:
    raise UserError('give the pilot run directories, e.g. benchmarks/detectors/pilot/pilot_*')
  pilots = detectors.load_runs(run_dirs, [])  # Labels unused: no detector is evaluated.
  delta, how = goodhart_event.delta_from_runs(run_dirs, FLAGS.delta_multiple)
  runs = [run_summary(run, delta) for run in pilots]
  text = markdown(delta, how, runs)
  prefix = pathlib.Path(FLAGS.output)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  files.write_text_atomic(f'{prefix}.md', text)
  files.write_json_atomic(f'{prefix}.json', {'delta': delta, 'delta_how': how, 'runs': runs})
  print(text)
  print(f'written: {prefix}.md, {prefix}.json')


if __name__ == '__main__':
  app.run(main)
