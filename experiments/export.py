"""Writes one round's adapters in a format other tools load.

  python experiments/export.py --workdir=runs/demo --round=2 --format=peft    # PeftModel
  python experiments/export.py --workdir=runs/demo --round=2 --format=merged  # AutoModelForCausalLM
  python experiments/export.py --workdir=runs/demo --round=2 --format=gguf    # llama.cpp --lora

Writes <workdir>/export/round_<N>_<format>[.gguf] unless --out is given, and prints its path.
`peft` and `gguf` read only the checkpoint and run_config.json; `merged` and `gguf` also
load the run's --model (its shape; `merged` its weights and tokenizer).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.train import export  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The run directory (<output>/<name>).')
flags.DEFINE_integer('round', None, 'Which saved round\'s adapters to export (1-based).')
flags.DEFINE_string('format', 'peft', f'One of {", ".join(export.FORMATS)}.')
flags.DEFINE_string('out', None, 'Where to write (default: <workdir>/export/...).')


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if FLAGS.format not in export.FORMATS:
    raise UserError(f'unknown --format {FLAGS.format!r}; choose one of {", ".join(export.FORMATS)}')
  if not FLAGS.workdir or FLAGS.round is None:
    raise UserError('--workdir and --round are required, e.g. --workdir=runs/demo --round=2')
  print(export.export_round(FLAGS.workdir, FLAGS.round, FLAGS.format, FLAGS.out))


if __name__ == '__main__':
  app.run(main)
