"""Self-improvement via inversion (V1), with flags mirroring the original's command line.

Each round also grades real quality on the held-out set (`--eval_every`, `--eval_tasks`).

  python experiments/self_improve.py --cycles=3 --tasks=12 --candidates=2 --name=demo

Writes <output>/<name>/{progress.json, self_improvement_results.json, checkpoints/, rows/,
report.md, goodhart.png}.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from inversion_jax import compile_cache, experiment, history, parallel, presets  # noqa: E402
from inversion_jax.parallel import distributed  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402

DEFAULTS = experiment.RunConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string('model', DEFAULTS.model, 'Registry name, .gguf file, HF checkpoint dir or hub id.')
flags.DEFINE_integer('cycles', DEFAULTS.cycles, 'Rounds of generate -> invert -> select -> train.')
flags.DEFINE_integer('tasks', DEFAULTS.tasks, 'Tasks sampled per round (BEFORE and AFTER each).')
flags.DEFINE_integer('candidates', DEFAULTS.candidates, 'Commands generated per task.')
flags.DEFINE_float('threshold', DEFAULTS.threshold, 'Keep candidates scoring at least this.')
flags.DEFINE_enum('filter', DEFAULTS.filter, ['threshold', 'reproducibility'],
                  'Selection filter: threshold (V1) or reproducibility (V2).')
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
flags.DEFINE_integer('eval_tasks', DEFAULTS.eval_tasks,
                     'Evaluate a stratified subset of this many held-out tasks (0 = all).')
flags.DEFINE_string('eval_split', DEFAULTS.eval_split, 'Held-out split: test (all) or small.')
flags.DEFINE_enum('on_goodhart', DEFAULTS.on_goodhart, ['off', 'warn', 'stop', 'rollback'],
                  'When the score rises while held-out quality falls (or an indicator jumps):'
                  ' warn, stop the run, or roll back to the best round\'s adapters.')
flags.DEFINE_float('goodhart_tolerance', DEFAULTS.goodhart_tolerance,
                   'Relative fall of graded held-out quality below the best round that alarms.')
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
flags.DEFINE_bool('resume', False, 'Continue <output>/<name> after its last complete round '
                  '(an error when it does not exist).')
flags.DEFINE_bool('resume_or_start', False, 'For scripts: --resume when <output>/<name> exists, '
                  'else start it.')


def config_from_flags() -> experiment.RunConfig:
  values = {field.name: getattr(FLAGS, field.name)
            for field in dataclasses.fields(experiment.RunConfig)
            if field.name not in ('weights', 'repro_weights')}
  try:
    weights = tuple(float(w) for w in FLAGS.weights)
  except ValueError:
    weights = ()
  if len(weights) != 3:
    raise UserError(f'--weights needs three numbers (overlap,ratio,judge), got {FLAGS.weights}')
  try:
    repro_weights = tuple(float(w) for w in FLAGS.repro_weights)
  except ValueError:
    repro_weights = ()
  if len(repro_weights) != 2:
    raise UserError(f'--repro_weights needs two numbers (embedding,options), got '
                    f'{FLAGS.repro_weights}')
  config = experiment.RunConfig(**values, weights=weights, repro_weights=repro_weights)
  explicit = [name for name in presets.check(FLAGS.preset) if FLAGS[name].present]
  return presets.apply(config, FLAGS.preset, explicit)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                         auto=FLAGS.distributed)  # Before anything starts a JAX backend.
  config = config_from_flags()
  compile_cache.enable()
  result = experiment.run(config, resume=FLAGS.resume or FLAGS.resume_or_start,
                          resume_or_start=FLAGS.resume_or_start)
  if not distributed.is_main():
    return
  print(history.format_summary(result))
  print(f'results: {config.run_dir / history.RESULTS_FILE}')
  print(f'checkpoints: {config.run_dir / "checkpoints"} (one per round)')
  print(f'rows: {config.run_dir / history.ROWS_SUBDIR} (every generated row, per phase)')
  print(f'report: {config.run_dir / "report.md"} and {config.run_dir / "goodhart.png"}')


if __name__ == '__main__':
  app.run(main)
