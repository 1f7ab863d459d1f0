"""Self-improvement via inversion (V1), with flags mirroring the original's command line.

Each round also grades real quality on the held-out set (`--eval_every`, `--eval_tasks`).

  python experiments/self_improve.py --cycles=3 --tasks=12 --candidates=2 --name=demo
  python experiments/self_improve.py --config=configs/demo.py --config.cycles=3

A config file (configs/*.py, `get_config()` from `config_files.base()`) sets every field;
`--config.FIELD=value` overrides one, and the flags below, where given, win over both.

Writes <output>/<name>/{progress.json, self_improvement_results.json, checkpoints/, rows/,
report.md, goodhart.png}.
"""

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from inversion_jax import compile_cache, config_files, experiment, history, parallel  # noqa: E402
from inversion_jax import presets  # noqa: E402
from inversion_jax.parallel import distributed  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402

DEFAULTS = experiment.RunConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string('model', DEFAULTS.model, 'Registry name, .gguf file, HF checkpoint dir or hub id.')
flags.DEFINE_integer('cycles', DEFAULTS.cycles, 'Rounds of generate -> invert -> select -> train.')
flags.DEFINE_integer('tasks', DEFAULTS.tasks, 'Tasks sampled per round (BEFORE and AFTER each).')
flags.DEFINE_integer('candidates', DEFAULTS.candidates, 'Commands generated per task.')
flags.DEFINE_float('threshold', None, f'Keep candidates scoring at least this (default '
                   f'{DEFAULTS.threshold}; not with --target_acceptance).')
flags.DEFINE_float('target_acceptance', DEFAULTS.target_acceptance,
                   'Calibrate the threshold instead: round 1\'s BEFORE scores (the base model) '
                   'set it to keep the fraction of candidates nearest this (in (0, 1); equal '
                   'scores are kept together); recorded in round 1 and fixed for every later '
                   'round and on resume. Same seed, same value.')
flags.DEFINE_enum('filter', DEFAULTS.filter, ['threshold', 'reproducibility', 'random_matched'],
                  'Selection filter: threshold (V1), reproducibility (V2) or random_matched (a '
                  'control: as many candidates as the threshold keeps, drawn uniformly at '
                  'random from all of them with a seed from --seed, the round and the phase).')
flags.DEFINE_enum('scorer', DEFAULTS.scorer, ['reconstruction', 'fidelity'],
                  'Intrinsic score: reconstruction (the original) or hidden-state fidelity.')
flags.DEFINE_integer('fidelity_layer', None, 'Fidelity: logit-lens layer (default: the middle).')
flags.DEFINE_integer('fidelity_k', DEFAULTS.fidelity_k, 'Fidelity: a token counts if in top-k.')
flags.DEFINE_integer('repro_m', DEFAULTS.repro_m,
                     'V2: keep a candidate with at least m-1 similar passing siblings.')
flags.DEFINE_float('repro_similarity', DEFAULTS.repro_similarity, 'V2: similarity threshold.')
flags.DEFINE_list('repro_weights', [str(w) for w in DEFAULTS.repro_weights],
                  'V2: weights of embedding similarity and option Jaccard (sum 1).')
flags.DEFINE_integer('repro_layer', None, 'V2: hidden layer of the embeddings (default: last).')
flags.DEFINE_float('temperature', DEFAULTS.temperature, 'Command generation temperature.')
flags.DEFINE_integer('max_new_tokens', DEFAULTS.max_new_tokens, 'Command generation budget.')
flags.DEFINE_enum('judge', DEFAULTS.judge, ['sample', 'expected'],
                  'sample: the original sampled 0-10 rating; expected: E[rating] in one pass.')
flags.DEFINE_list('weights', [str(w) for w in DEFAULTS.weights],
                  'Weights of token overlap, sequence ratio and judge rating.')
flags.DEFINE_string('prompt_style', DEFAULTS.prompt_style, 'fewshot (small models) or original.')
flags.DEFINE_float('lr', DEFAULTS.lr, 'AdamW learning rate (linear decay within a round).')
flags.DEFINE_integer('batch_size', DEFAULTS.batch_size, 'Training batch size (global).')
flags.DEFINE_integer('epochs', DEFAULTS.epochs, 'Training epochs per round.')
flags.DEFINE_bool('completion_only', DEFAULTS.completion_only, 'Loss on command tokens only.')
flags.DEFINE_integer('lora_rank', DEFAULTS.lora_rank, 'LoRA rank r.')
flags.DEFINE_float('lora_alpha', DEFAULTS.lora_alpha, 'LoRA alpha.')
flags.DEFINE_float('lora_dropout', DEFAULTS.lora_dropout, 'LoRA dropout.')
flags.DEFINE_enum('dtype', DEFAULTS.dtype, ['float32', 'bfloat16'], 'Parameter/compute dtype.')
flags.DEFINE_integer('seed', DEFAULTS.seed, 'Seed of every random choice in the run.')
flags.DEFINE_integer('num_devices', DEFAULTS.num_devices, 'Devices per process.')
flags.DEFINE_enum('parallel', DEFAULTS.parallel, list(parallel.BACKENDS),
                  'pmap (replicated weights, rows split) or mesh (jit over a data x model mesh).')
flags.DEFINE_bool('shard_params', DEFAULTS.shard_params,
                  'mesh: tensor-parallel weights on the model axis (models too big to replicate).')
flags.DEFINE_integer('model_axis', DEFAULTS.model_axis,
                     'With --shard_params: devices sharing the weights (0 = all).')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-process: HOST:PORT of process 0 (with --num_processes, --process_id).')
flags.DEFINE_integer('num_processes', None, 'Multi-process: how many processes run this job.')
flags.DEFINE_integer('process_id', None, 'Multi-process: this process (0 = the coordinator).')
flags.DEFINE_bool('distributed', False,
                  'Multi-process with JAX\'s auto-detection (Cloud TPU VMs, SLURM).')
flags.DEFINE_integer('max_batch', DEFAULTS.max_batch,
                     'Rows decoded together (one wave, one decode loop; memory grows with it).')
flags.DEFINE_integer('eval_every', DEFAULTS.eval_every,
                     'Evaluate real quality on the held-out set every N rounds (0 = never).')
flags.DEFINE_integer('after_every', DEFAULTS.after_every,
                     'Run the AFTER phase every k rounds and in the last (1 = every round; 0 = '
                     'the last only). A round without AFTER reads its intrinsic change from the '
                     'next round\'s BEFORE (same adapters, other tasks) and its early-warning '
                     'indicators from its own BEFORE. --preset=original: 1 unless given.')
flags.DEFINE_integer('eval_tasks', DEFAULTS.eval_tasks,
                     'Evaluate a stratified subset of this many held-out tasks (0 = all).')
flags.DEFINE_string('eval_split', DEFAULTS.eval_split, 'Held-out split: test (all) or small.')
flags.DEFINE_enum('on_goodhart', DEFAULTS.on_goodhart, ['off', 'warn', 'stop', 'rollback'],
                  'When the score rises while held-out quality falls (or an indicator jumps):'
                  ' warn, stop the run, or roll back to the best round\'s adapters.')
flags.DEFINE_float('goodhart_tolerance', DEFAULTS.goodhart_tolerance,
                   'The gold event\'s drop: graded held-out quality this far (absolute) below '
                   'the best evaluation so far alarms (goodhart_event.py).')
flags.DEFINE_enum('preset', DEFAULTS.preset, list(presets.PRESETS),
                  'original: every setting of the original experiment (its prompts, top-k 50, '
                  'generation to EOS, its task bank, clipping 1.0, PEFT init...); flags given '
                  'explicitly still win.')
flags.DEFINE_string('task_bank', DEFAULTS.task_bank, 'Task bank: default (ours) or original.')
flags.DEFINE_integer('top_k', DEFAULTS.top_k, 'Sample from the top k tokens (unset: all).')
flags.DEFINE_float('top_p', DEFAULTS.top_p, 'Nucleus sampling mass (unset: 1).')
flags.DEFINE_bool('stop_at_newline', DEFAULTS.stop_at_newline,
                  'Stop a row at its first newline; --nostop_at_newline runs to EOS as the '
                  'original did (then keeps the first line).')
flags.DEFINE_enum('command_cleaning', DEFAULTS.command_cleaning, ['ours', 'original'],
                  'How a generation becomes a command: ours also skips a ``` fence line.')
flags.DEFINE_float('max_grad_norm', DEFAULTS.max_grad_norm,
                   'Clip gradients to this global norm (unset: no clipping).')
flags.DEFINE_enum('lora_init', DEFAULTS.lora_init, ['he', 'peft'],
                  'LoRA A init: he (He-uniform) or peft (kaiming_uniform(a=sqrt(5))).')
flags.DEFINE_enum('bos', DEFAULTS.bos, ['always', 'tokenizer'],
                  'BOS before every prompt (always), or as the tokenizer\'s config says.')
flags.DEFINE_enum('quantize', DEFAULTS.quantize, ['none', 'int8'],
                  'Generation weights: int8 = weight-only int8 block projections (per-channel '
                  'scales, dequantized inside the matmul); training stays in --dtype.')
flags.DEFINE_string('output', DEFAULTS.output, 'Directory holding runs.')
flags.DEFINE_string('name', DEFAULTS.name, 'Run name: the run lives in <output>/<name>.')
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


def _numbers(name: str, count: str, meaning: str) -> tuple[float, ...]:
  try:
    values = tuple(float(w) for w in FLAGS[name].value)
  except ValueError:
    values = ()
  if len(values) != {'two': 2, 'three': 3}[count]:
    raise UserError(f'--{name} needs {count} numbers ({meaning}), got {FLAGS[name].value}')
  return values


def config_from_flags() -> experiment.RunConfig:
  """Flags (RunConfig's defaults unless given), or the --config file with the flags given
  on top; a preset fills the settings nobody gave (a file holds its preset's already)."""
  values = {field.name: getattr(FLAGS, field.name)
            for field in dataclasses.fields(experiment.RunConfig)
            if field.name not in ('weights', 'repro_weights')}
  values['weights'] = _numbers('weights', 'three', 'overlap,ratio,judge')
  values['repro_weights'] = _numbers('repro_weights', 'two', 'embedding,options')
  explicit = [name for name in values if FLAGS[name].present]
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
    values['threshold'] = DEFAULTS.threshold
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
  fields = {field.name for field in dataclasses.fields(experiment.RunConfig)}
  for arg in args:
    if arg.startswith('--config.'):
      field = arg[len('--config.'):].split('=')[0].split('.')[0]
      if field not in fields:
        raise UserError(f'--config.{field} is not a setting; --config.FIELD overrides one of '
                        'RunConfig\'s fields (inversion_jax/experiment.py)')


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
  print(history.format_summary(result))
  print(f'results: {config.run_dir / history.RESULTS_FILE}')
  print(f'checkpoints: {config.run_dir / "checkpoints"} (one per round)')
  print(f'rows: {config.run_dir / history.ROWS_SUBDIR} (every generated row, per phase)')
  print(f'report: {config.run_dir / "report.md"} and {config.run_dir / "goodhart.png"}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
