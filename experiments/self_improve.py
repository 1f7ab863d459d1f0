"""Self-improvement via inversion (V1), with flags mirroring the original's command line.

Each round also grades real quality on the held-out set (`--eval_every`, `--eval_tasks`).

  python experiments/self_improve.py --cycles=3 --tasks=12 --candidates=2 --name=demo
  python experiments/self_improve.py --config=configs/demo.py --config.cycles=3

A config file (configs/*.py, `get_config()` from `config_files.base()`) sets every field;
`--config.FIELD=value` overrides one, and the flags below, where given, win over both.

Writes <output>/<name>/{progress.json, self_improvement_results.json, checkpoints/, rows/,
report.md, goodhart.png}.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from inversion_jax import compile_cache  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.loop import config_files, experiment  # noqa: E402
from inversion_jax.loop import presets  # noqa: E402
from inversion_jax.loop import run_config  # noqa: E402
from inversion_jax.loop import run_flags  # noqa: E402
from inversion_jax.parallel import distributed  # noqa: E402
from inversion_jax.records import files  # noqa: E402
from inversion_jax.records import console  # noqa: E402
from inversion_jax.records import history  # noqa: E402

DEFAULTS = experiment.RunConfig()
FLAGS = flags.FLAGS
run_flags.define(FLAGS)  # One flag per RunConfig field (loop/run_config.py).
flags.adopt_module_key_flags(run_flags)  # Listed by --help with the flags below.
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process: HOST:PORT of process 0 (with --num_processes, --process_id).')
flags.DEFINE_integer('num_processes', None, 'Multi-process: how many processes run this job.')
flags.DEFINE_integer('process_id', None, 'Multi-process: this process (0 = the coordinator).')
flags.DEFINE_bool('distributed', False,
                  'Multi-process with JAX\'s auto-detection (Cloud TPU VMs, SLURM).')
config_flags.DEFINE_config_file(
    'config', None, 'An experiment as a file: configs/demo.py, configs/original.py, '
    'configs/study_v1.py...; --config.FIELD=value overrides one of its settings.')
flags.DEFINE_bool('resume', False, 'Continue <output>/<name> after its last complete round '
                  '(an error when it does not exist).')
flags.DEFINE_bool('resume_or_start', False, 'For scripts: --resume when <output>/<name> exists, '
                  'else start it.')
flags.DEFINE_bool('print_config', False, 'Print the resolved settings as JSON and exit.')
flags.DEFINE_bool('tensorboard', True, 'Write TensorBoard event files into the run directory '
                  '(`tensorboard --logdir <output>`).')


def config_from_flags() -> experiment.RunConfig:
  """Flags (RunConfig's defaults unless given), or the --config file with the flags given
  on top; a preset fills the settings nobody gave (a file holds its preset's already)."""
  values = run_flags.values(FLAGS)
  explicit = run_flags.given(FLAGS)
  if FLAGS.threshold is not None and FLAGS.target_acceptance is not None:
    raise UserError('give --threshold or --target_acceptance (which calibrates it), not both')
  if FLAGS.config is not None:
    values = config_files.run_config_values(FLAGS.config) | {
        name: values[name] for name in explicit}
  elif FLAGS.threshold is None:
    matched = FLAGS.filter == 'random_matched' and FLAGS.target_acceptance is None
    if matched and 'threshold' not in presets.check(FLAGS.preset):
      raise UserError('--filter=random_matched keeps as many candidates as a threshold would: '
                      'give --threshold or --target_acceptance')
    values['threshold'] = DEFAULTS.selection.threshold
  config = experiment.RunConfig(**values)
  if FLAGS.config is not None and not FLAGS['preset'].present:
    return config
  return presets.apply(config, config.preset, explicit)


def parse_flags(argv):
  """absl's parsing, with a bad flag or config file reported as one line (exit 2)."""
  try:
    _check_overrides(argv[1:])
    parsed = FLAGS(argv)
    if FLAGS['config'].present:
      path = config_flags.get_config_filename(FLAGS['config'])
      if not os.path.isfile(path):
        raise UserError(f'config file {path} does not exist; the experiments are in configs/')
      config_files.run_config_values(FLAGS.config)  # The file loads lazily: load it now.
    return parsed
  except (flags.Error, UserError, OSError, AttributeError, TypeError, ValueError) as error:
    _exit_with(str(error))


def _check_overrides(args):
  """`--config.FIELD=...` must name a RunConfig field (ConfigDict's own error names none)."""
  fields = run_config.flat_fields()
  for arg in args:
    if arg.startswith('--config.'):
      field = arg[len('--config.'):].split('=')[0].split('.')[0]
      if field not in fields:
        raise UserError(f'--config.{field} is not a setting; --config.FIELD overrides one of '
                        'RunConfig\'s settings (inversion_jax/loop/run_config.py)')


def _exit_with(message: str):
  """One line: the last line of an embedded traceback, without ConfigDict's field list."""
  lines = [line for line in message.splitlines() if line.strip()]
  if any('Traceback' in line for line in lines):
    message = lines[-1]
  message = message.split(' Other fields present')[0]
  sys.stderr.write('error: ' + ' '.join(message.split()) + '\n')
  sys.exit(2)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                         auto=FLAGS.distributed)  # Before anything starts a JAX backend.
  config = config_from_flags()
  if FLAGS.print_config:
    config.validate()
    print(json.dumps(config.as_dict(), indent=2))
    return
  compile_cache.enable()
  result = experiment.run(config, resume=FLAGS.resume or FLAGS.resume_or_start,
                          resume_or_start=FLAGS.resume_or_start, tensorboard=FLAGS.tensorboard)
  if not distributed.is_main():
    return
  print(console.format_summary(result))
  print(f'results: {config.run_dir / history.RESULTS_FILE}')
  print(f'checkpoints: {config.run_dir / "checkpoints"} (one per round)')
  print(f'rows: {config.run_dir / files.ROWS_SUBDIR} (every generated row, per phase)')
  print(f'report: {config.run_dir / "report.md"} and {config.run_dir / "goodhart.png"}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
