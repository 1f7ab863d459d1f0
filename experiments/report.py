"""Writes the Goodhart report of a run: report.md and goodhart.png in its directory.

  python experiments/report.py --workdir=runs/demo

(The loop writes it at the end of every run; rerun this after `evaluate_quality.py`.)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.records import report  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The run directory (runs/NAME).')


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --workdir')
  if not FLAGS.workdir:
    raise UserError('--workdir is required: the run directory, e.g. runs/demo')
  if not os.path.isdir(FLAGS.workdir):
    raise UserError(f'--workdir={FLAGS.workdir} is not a directory')
  markdown, png = report.write(FLAGS.workdir)
  print(f'report: {markdown}\nplot: {png}')


if __name__ == '__main__':
  app.run(main)
