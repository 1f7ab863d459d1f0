"""Evaluates real quality on the held-out set for every saved round not yet evaluated.

  python experiments/evaluate_quality.py --workdir=runs/demo [--eval_tasks=0]
  python experiments/evaluate_quality.py --model=smollm2-135m-instruct --output=base.json

Reloads each round's LoRA adapters from its Orbax checkpoint (and the base model as
round 0), decodes the held-out tasks greedily and grades them with the validator; writes
`quality/round_NNN.json` and `rows/round_NNN_heldout.jsonl`, then the report. Resumable:
rounds already evaluated (in the loop or by an earlier call) are skipped. With `--model`
instead of `--workdir` it evaluates that base model alone and writes `--output` (metrics,
per tool, and every row).
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from inversion_jax import compile_cache  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import metrics  # noqa: E402
from inversion_jax.loop import experiment, rounds  # noqa: E402
from inversion_jax.loop import run_config as run_config_lib  # noqa: E402
from inversion_jax.records import files  # noqa: E402
from inversion_jax.records import history, report, run_dir  # noqa: E402
from inversion_jax.train.checkpointing import CHECKPOINT_SUBDIR, RUN_CONFIG_FILE, RoundCheckpointer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The run directory (runs/NAME).')
flags.DEFINE_integer('eval_tasks', None, 'Held-out subset size (default: the run\'s; 0 = all).')
flags.DEFINE_string('eval_split', None, 'Held-out split (default: the run\'s).')
flags.DEFINE_string('model', None, 'Evaluate this base model instead of a run\'s rounds.')
flags.DEFINE_string('output', None, 'With --model: JSON file for metrics and rows.')
flags.DEFINE_integer('max_new_tokens', 100, 'With --model: command budget.')


def evaluate_base_model():
  """--model: the base model's greedy held-out quality, per tool, every row."""
  if not FLAGS.output:
    raise UserError('--model needs --output, the JSON file to write')
  output = files.check_output_file(FLAGS.output)  # Before minutes of evaluation.
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable()
  config = experiment.RunConfig(model=FLAGS.model, eval_every=1,
                                eval_tasks=FLAGS.eval_tasks or 0,
                                eval_split=FLAGS.eval_split or 'test',
                                max_new_tokens=FLAGS.max_new_tokens)
  config.validate()
  exp = experiment.build(config)
  phase = rounds.heldout_phase(exp, exp.generator)
  files.write_json_atomic(output, {'model': FLAGS.model, 'split': config.evaluation.eval_split,
                                           'metrics': phase.metrics, 'seconds': phase.seconds,
                                           'rows': phase.rows})
  metrics_ = phase.metrics
  rows_ = [m for m in metrics.HELDOUT_ROWS if m.key in metrics_]
  print(f'{FLAGS.model}: graded {metrics_["quality"]:.3f}, strict {metrics_["strict"]:.1%}, '
        f'NLC2CMD {metrics_["nlc2cmd"]:.3f} on {int(metrics_["num_graded"])} tasks '
        f'({phase.seconds["heldout"]:.0f}s)')
  print('| tool | ' + ' | '.join(m.label for m in rows_) + ' |\n|---|' + '---|' * len(rows_))
  for key in sorted(k for k in metrics_ if k.startswith('quality/')):
    tool = key.split('/', 1)[1]
    print(f'| {tool} | ' + ' | '.join(format(metrics_[f'{m.key}/{tool}'], m.spec) for m in rows_)
          + ' |')
  print(f'rows: {output}')


def saved_rounds(workdir: pathlib.Path) -> list[int]:
  directory = workdir / CHECKPOINT_SUBDIR
  found = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) \
      if directory.is_dir() else []
  if not found:
    raise UserError(f'{workdir} has no saved rounds (no checkpoints under {directory}); '
                    'run the loop first')
  return found


def evaluated(workdir: pathlib.Path, records: dict, round_index: int) -> bool:
  if report.quality_path(workdir, round_index).exists():
    return True
  if round_index == 0:
    return metrics.get(records.get(1, {}), metrics.BASE_PHASE, 'quality') is not None
  return metrics.get(records.get(round_index, {}), metrics.HELDOUT_PHASE, 'quality') is not None


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --workdir')
  if FLAGS.model:
    if FLAGS.workdir:
      raise UserError('give --workdir (a run\'s rounds) or --model (a base model), not both')
    return evaluate_base_model()
  if not FLAGS.workdir:
    raise UserError('--workdir is required: the run directory, e.g. runs/demo '
                    '(or --model=NAME --output=FILE for a base model)')
  workdir = pathlib.Path(FLAGS.workdir).expanduser()
  if not workdir.is_dir():
    raise UserError(f'--workdir={workdir} is not a directory')
  with run_dir.RunLock(workdir, 'the evaluation'):  # One writer: not beside a running loop.
    evaluate_rounds(workdir)


def run_config(workdir: pathlib.Path, overrides: dict) -> experiment.RunConfig:
  """The run's configuration from run_config.json, checked like the loop's flags."""
  path = workdir / RUN_CONFIG_FILE
  advice = ('resume the run once with self_improve.py --resume (it rewrites the file from the '
            'checkpoints)')
  stored = files.read_json(path, advice)
  fields = run_config_lib.flat_fields()
  stored = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in fields}
  config = experiment.RunConfig(**(stored | overrides))
  try:
    config.validate()
  except UserError as error:
    raise UserError(f'{path} holds a bad value: {error}; {advice}') from None
  return config


def evaluate_rounds(workdir: pathlib.Path):
  todo_rounds = saved_rounds(workdir)
  overrides = {'eval_every': 1}
  if FLAGS.eval_tasks is not None:
    overrides['eval_tasks'] = FLAGS.eval_tasks
  if FLAGS.eval_split is not None:
    overrides['eval_split'] = FLAGS.eval_split
  config = run_config(workdir, overrides)
  records = {}
  if (workdir / history.PROGRESS_FILE).exists():
    records = {r['cycle']: r for r in
               history.rounds_of(history.read_progress(workdir / history.PROGRESS_FILE))}
  todo = [r for r in [0] + todo_rounds if not evaluated(workdir, records, r)]
  if not todo:
    print(f'every saved round of {workdir} is already evaluated')
  else:
    logging.set_verbosity(logging.WARNING)
    compile_cache.enable()
    exp = experiment.build(config)
    with RoundCheckpointer(workdir, config.as_dict()) as checkpointer:
      evaluate_each(exp, workdir, checkpointer, todo)
  if (workdir / history.PROGRESS_FILE).exists():
    markdown, png = report.write(workdir)
    print(f'report: {markdown}\nplot: {png}')


def evaluate_each(exp, workdir: pathlib.Path, checkpointer, todo: list[int]):
  """Held-out quality of each round in `todo`: its rows, its quality file."""
  opt_like = exp.trainer.init_opt_state(exp.initial_lora)
  for round_index in todo:
    lora = exp.initial_lora
    if round_index:
      lora, _, _, _ = checkpointer.restore(round_index, exp.initial_lora, opt_like)
    generator = exp.generator.with_state(exp.inference_state(lora))
    phase = rounds.heldout_phase(exp, generator)
    files.write_rows(workdir, round_index, metrics.HELDOUT_PHASE, phase.rows)
    path = report.quality_path(workdir, round_index)
    path.parent.mkdir(exist_ok=True)
    files.write_json_atomic(path, {'round': round_index, 'metrics': phase.metrics,
                                     'seconds': phase.seconds})
    print(f'round {round_index}: graded {phase.metrics["quality"]:.3f}, strict '
          f'{phase.metrics["strict"]:.1%}, NLC2CMD {phase.metrics["nlc2cmd"]:.3f} on '
          f'{int(phase.metrics["num_graded"])} tasks ({phase.seconds["heldout"]:.1f}s)',
          flush=True)


if __name__ == '__main__':
  app.run(main)
