"""Held-out quality against the examples trained so far, per arm (exploratory, not registered).

  python experiments/study/quality_by_dose.py benchmarks/study2/{r,v1,v2}_s{0,1,2} \
      --output=benchmarks/study2/quality_by_dose

The study's arms received different doses: R is matched to the threshold's count each round,
V2 keeps its own (about half). Plotting each round's graded held-out quality at the run's
cumulative training examples puts the arms on one dose axis, so a reader can see how much of
V2's difference from R is its smaller dose. Writes <output>.png (one line per run, one colour
per arm) and <output>.md (per arm and round: mean cumulative examples and mean quality over
seeds). Reads progress.json only; the held-out figure is `heldout/quality`, the mean of the
committed held-out rows' graded quality.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.records import files, report  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('output', 'benchmarks/study2/quality_by_dose',
                    'Path prefix of the .png and .md written.')
ARMS = {'random_matched': 'R', 'threshold': 'V1', 'reproducibility': 'V2'}
COLOURS = {'R': 'tab:blue', 'V1': 'tab:orange', 'V2': 'tab:green'}


def dose_curve(rounds: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """(cumulative examples, graded held-out quality) at round 0 (the base model) and after
  each round's training."""
  try:
    examples = [r['metrics']['train/num_examples'] for r in rounds]
    quality = [rounds[0]['metrics']['base/quality']] + [
        r['metrics']['heldout/quality'] for r in rounds]
  except KeyError as error:
    raise UserError(f'a round lacks {error}: the run needs the held-out evaluation every '
                    'round (--eval_every=1)') from None
  return np.concatenate([[0], np.cumsum(examples)]), np.asarray(quality, float)


def load(run_dirs: list[str]) -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
  """arm -> [(seed, cumulative examples, quality)] for each run."""
  out = {}
  for run_dir in run_dirs:
    config, rounds = report.load_rounds(run_dir)
    arm = ARMS.get(config.get('filter'), config.get('filter', '?'))
    out.setdefault(arm, []).append((config.get('seed'), *dose_curve(rounds)))
  return out


def table(curves: dict) -> str:
  """Per arm and round, means over seeds (runs of an arm must have the same rounds)."""
  lines = ['| arm | round | examples so far (mean over seeds) | graded held-out quality '
           '(mean over seeds) |', '|---|---|---|---|']
  for arm, runs in curves.items():
    length = min(len(q) for _, _, q in runs)
    examples = np.mean([x[:length] for _, x, _ in runs], axis=0)
    quality = np.mean([q[:length] for _, _, q in runs], axis=0)
    for index in range(length):
      lines.append(f'| {arm} | {index} | {examples[index]:.0f} | {quality[index]:.3f} |')
  return '\n'.join(lines) + '\n'


def plot(curves: dict, path: pathlib.Path) -> None:
  from matplotlib import pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  for arm, runs in curves.items():
    for index, (seed, examples, quality) in enumerate(runs):
      ax.plot(examples, quality, marker='o', markersize=3, color=COLOURS.get(arm),
              alpha=0.8, label=arm if index == 0 else None)
  ax.set_xlabel('examples trained so far')
  ax.set_ylabel('graded held-out quality')
  ax.set_title('held-out quality by dose (one line per run; exploratory)')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  files.save_figure_atomic(fig, path, dpi=120)


@exit_on_user_error
def main(argv):
  if len(argv) < 2:
    raise UserError('give run directories, e.g. benchmarks/study2/{r,v1,v2}_s{0,1,2}')
  curves = load(argv[1:])
  output = pathlib.Path(FLAGS.output)
  output.parent.mkdir(parents=True, exist_ok=True)
  text = table(curves)
  plot(curves, output.with_suffix('.png'))
  files.write_text_atomic(output.with_suffix('.md'), text)
  print(text)


if __name__ == '__main__':
  app.run(main)
