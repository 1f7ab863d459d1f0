"""Rollback measured: `--on_goodhart=rollback` runs against their `warn` twins, by seed.

  python experiments/detectors/rollback.py --warn=runs/echo_s0,runs/echo_s1 \
      --rollback=runs/echo_s0_rollback,runs/echo_s1_rollback --output=benchmarks/detectors/rb

Pairs and measures: `inversion_jax/goodhart/rollback_pairs.py` (by seed; final held-out quality,
rollback minus warn, and the rounds lost; mean and Student-t 95 % interval over pairs).
Writes `<output>.md`, `<output>.json` and `<output>.png` (`rollback_plot.py`: each pair's
held-out quality by round, the rollbacks marked).
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import rollback_pairs, rollback_plot  # noqa: E402
from inversion_jax.loop import experiment  # noqa: E402
from inversion_jax.records import files  # noqa: E402
from inversion_jax.records import report  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list('warn', [], 'Run directories made with --on_goodhart=warn.')
flags.DEFINE_list('rollback', [], 'Their twins made with --on_goodhart=rollback.')
flags.DEFINE_string('output', 'rollback', 'Path prefix of the .md and .json written.')


def _load(dirs) -> list[tuple]:
  out = []
  for run_dir in dirs:
    if not pathlib.Path(run_dir).is_dir():
      raise UserError(f'{run_dir} is not a run directory')
    config, rounds = report.load_rounds(run_dir)
    out.append((str(run_dir), config, rounds))
  return out


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --warn and --rollback')
  if not FLAGS.warn or not FLAGS.rollback:
    raise UserError('give both: --warn=DIRS and --rollback=DIRS (their twins)')
  defaults = files.jsonable(experiment.RunConfig().as_dict())
  warn, rollback = _load(FLAGS.warn), _load(FLAGS.rollback)
  pairs = rollback_pairs.pair(warn, rollback, defaults)
  result = rollback_pairs.summary(pairs)
  prefix = pathlib.Path(FLAGS.output)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  rollback_plot.plot_pairs(pairs, {run[0]: run[2] for run in warn + rollback}, f'{prefix}.png')
  text = rollback_pairs.markdown(result) + f'\n![Each pair by round]({prefix.name}.png)\n'
  files.write_text_atomic(f'{prefix}.md', text)
  files.write_json_atomic(f'{prefix}.json', result | {'plot': f'{prefix.name}.png'})
  print(text)
  print(f'written: {prefix}.md, {prefix}.json, {prefix}.png')


if __name__ == '__main__':
  app.run(main)
