"""A whole self-improvement run: set-up, the round loop, resume.

`RunConfig` (run_config.py) is the one place settings land. `build` loads the model once, adds LoRA
adapters (zero update, so round 1 starts from the base model) and wires the pieces;
`run` loops over rounds, checkpointing each completed round with Orbax and writing
progress.json after it, and on `resume` continues after the last complete round.
"""

import dataclasses

import jax

from inversion_jax import errors
from inversion_jax import parallel
from inversion_jax.decode import generation
from inversion_jax.decode import prompts as prompts_lib
from inversion_jax.errors import UserError
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.loop import rounds
from inversion_jax.loop.run_config import RunConfig
from inversion_jax.loop import selection
from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.loading import registry
from inversion_jax.parallel import distributed
from inversion_jax.parallel import footprint
from inversion_jax.quality import evaluation
from inversion_jax.quality import heldout
from inversion_jax.records import console as console_lib
from inversion_jax.records import history as history_lib
from inversion_jax.records import run_dir as run_dir_lib
from inversion_jax.scoring import inversion
from inversion_jax.tasks import bank as bank_lib
from inversion_jax.train import checkpointing
from inversion_jax.train import training


@dataclasses.dataclass
class Experiment:
  """The loaded model and the pieces a round needs."""

  config: RunConfig
  graphdef: object  # With adapters: training.
  base: object
  initial_lora: object
  plain_state: object  # The adapter-free model: generation runs on merged weights.
  lora_config: lora_lib.LoRAConfig
  tokenizer: object
  generator: generation.Generator
  trainer: training.Trainer
  style: prompts_lib.PromptStyle
  bank: bank_lib.TaskBank
  filter: selection.Filter
  scorer: inversion.ScorerConfig
  heldout: list  # Held-out records evaluated in the loop ([] when --eval_every=0).
  backend: parallel.Backend = None  # Where it all runs (parallel.make_backend).
  # --target_acceptance: the threshold set by round 1's BEFORE, fixed from then on.
  calibration: dict | None = None
  # (prompts, the base model's next-token log-probs there): KL from base's fixed probe,
  # made by `rounds.kl_probe` at the first signals phase of a process.
  kl_probe: tuple | None = None

  def count_tokens(self, text: str) -> int:
    return len(self.tokenizer.encode(text))

  def inference_state(self, lora):
    """Weights for generation: the adapters folded into the base kernels."""
    return lora_lib.merge_into_base(lora, self.base, self.lora_config, self.plain_state)


# The original's temperature and budget of the reconstruction and rating calls.
CALL_SAMPLING = {'reconstruction': (0.3, 50), 'rating': (0.1, 5)}


def build(config: RunConfig, model_source=None) -> Experiment:
  """Loads the model (or takes `model_source` = (ModelConfig, flat params, tokenizer))."""
  config.validate()
  return _build_validated(config, model_source)


def _build_validated(config: RunConfig, model_source) -> Experiment:
  model_config, flat, tokenizer = model_source or registry.load_model_source(config.model)
  config.check_layers(model_config.num_layers)
  backend = config.devices.make_backend(model_config)
  # Each tensor placed straight into its sharding; one base for every stage (footprint.py).
  plain_graphdef, plain_state = model_lib.from_flat_params(
      model_config.replace(dtype=config.dtype), flat, place=backend.param_sharding)
  lora_config = config.lora.lora_config()
  run_state = footprint.run_state(plain_graphdef, plain_state, backend, lora_config,
                                  seed=config.seed)
  graphdef, lora, base, plain_state = (run_state.graphdef, run_state.lora, run_state.base,
                                       run_state.plain)
  generation_settings, evaluation_settings = config.generation, config.evaluation
  return Experiment(
      config=config, graphdef=graphdef, base=base, initial_lora=lora, plain_state=plain_state,
      lora_config=lora_config, tokenizer=tokenizer,
      generator=generation.Generator(
          plain_graphdef, plain_state, tokenizer, stop_strings=('\n',),
          max_batch=generation_settings.max_batch,
          add_bos=generation_settings.bos == 'always' or tokenizer.add_bos,
          quantize=generation_settings.quantize, backend=backend,
          show_progress=backend.is_main),
      trainer=training.Trainer(graphdef, base, config.train.train_config(),
                               pad_id=tokenizer.pad_id, backend=backend,
                               show_progress=backend.is_main),
      backend=backend,
      style=prompts_lib.get_style(generation_settings.prompt_style),
      bank=bank_lib.named_bank(config.task_bank),
      filter=config.selection.make_filter(config.seed),
      scorer=config.scoring.scorer_config(generation_settings, CALL_SAMPLING),
      heldout=(evaluation.subset(heldout.load(evaluation_settings.eval_split),
                                 evaluation_settings.eval_tasks)
               if evaluation_settings.eval_every else []),
  )


def open_run(config: RunConfig, resume: bool):
  """(checkpointer, history, next round) for a new or resumed run."""
  checkpointer = checkpointing.RoundCheckpointer(config.run_dir, config.as_dict())
  try:
    done = checkpointer.latest_round()
    if not resume:
      if done:
        raise UserError(f'{config.run_dir} already holds {done} completed rounds; pass --resume '
                        'to continue it, or choose another --name or --output')
      checkpointer.write_run_config()
      return checkpointer, history_lib.RunHistory(config.as_dict(), config.seed), 1
    checkpointer.check_resume(config.as_dict(), defaults=RunConfig().as_dict())
  except BaseException:
    checkpointer.close()
    raise
  return checkpointer, history_lib.RunHistory(config.as_dict(), config.seed), (done or 0) + 1


def run(config: RunConfig, resume: bool = False, model_source=None,
        resume_or_start: bool = False, tensorboard: bool = True) -> history_lib.RunHistory:
  """Runs (or resumes) the experiment; returns the history of all completed rounds.

  `resume` continues `<output>/<name>` and refuses a directory that does not exist (a
  mistyped --name would otherwise start a new run); `resume_or_start` (for scripts)
  starts it then. The run directory is locked for the run's life: one writer.
  `tensorboard`: also write TensorBoard event files into the run directory (summaries.py).
  """
  config.validate()
  if resume and not resume_or_start and not config.run_dir.is_dir():
    raise UserError(f'--resume: there is no run {config.run_dir}; check --output and --name, '
                    'or drop --resume to start it')
  if config.run_dir.is_dir() and distributed.is_main():  # Only process 0 takes the lock.
    run_dir_lib.check_unlocked(config.run_dir)  # Before minutes of model loading.
  # Before the run dir exists: a failed load leaves nothing.
  exp = _build_validated(config, model_source)
  run_dir = run_dir_lib.RunDir(config.run_dir, exp.backend.is_main, tensorboard=tensorboard)
  with run_dir.lock():
    run_dir.sweep_partial_files()
    checkpointer, history, first_round = open_run(config, resume)
    run_dir.log_config(config.as_dict())  # Each round is flushed as it is logged.
    try:
      return _run_rounds(exp, config, run_dir, checkpointer, history, first_round)
    except KeyboardInterrupt:
      raise errors.Interrupted(_kept(config, checkpointer)) from None
    except errors.OutputError as error:
      raise errors.OutputError(f'{error}; {_kept(config, checkpointer)}') from error
    finally:
      checkpointer.close()
      run_dir.close()


def _kept(config: RunConfig, checkpointer) -> str:
  """Where the run stands and how to go on, for a run stopped by Ctrl-C or a write error."""
  try:
    done = checkpointer.all_rounds()
  except Exception:  # pylint: disable=broad-except
    done = []
  if not done:
    kept = f'no round of {config.run_dir} was completed'
  else:
    kept = (f'round 1 is saved in {config.run_dir}' if done[-1] == 1
            else f'rounds 1-{done[-1]} are saved in {config.run_dir}')
  return f'{kept}; continue with the same flags and --resume'


def _run_rounds(exp: Experiment, config: RunConfig, run_dir, checkpointer, history,
                first_round: int) -> history_lib.RunHistory:
  """The round loop; every derived file (progress, results, report) is rewritten from the
  checkpoints on resume, whatever an interruption left behind."""
  lora = exp.initial_lora
  if first_round > 1:
    lora, history = _restore(exp, checkpointer, first_round - 1, history)
    run_dir.save_progress(history)  # Repairs a progress.json a kill left behind.
    exp.calibration = history.rounds[0].get('calibration')
    if config.selection.target_acceptance is not None and exp.calibration is None:
      raise UserError(f'{config.run_dir} has no calibrated threshold in round 1; it cannot be '
                      'resumed with --target_acceptance')
    done = first_round - 1
    run_dir.say(f'{config.run_dir} already has all {done} rounds; its results:'
                if done >= config.cycles else f'resuming {config.run_dir} after round {done}')
  monitor = config.monitor.make_monitor()
  base = None
  if first_round == 1 and config.evaluation.eval_every:
    base = rounds.heldout_phase(exp, exp.generator, metrics_lib.BASE_PHASE)
    run_dir.write_rows(0, metrics_lib.HELDOUT_PHASE, base.rows)
  for round_index in range(first_round, config.cycles + 1):
    try:
      result = rounds.run_round(exp, lora, round_index, base if round_index == 1 else None,
                                history.rounds[0]['metrics'] if history.rounds else None)
    except training.NonFiniteLoss as error:
      raise UserError(
          f'round {round_index}: {error}; the round was stopped and rounds 1-{round_index - 1} '
          f'are intact in {config.run_dir}; lower --lr and rerun with --resume') from error
    for phase in result.phases:
      if phase.rows and phase.name != metrics_lib.BASE_PHASE:
        run_dir.write_rows(round_index, phase.name, phase.rows)
    action = monitor.act(monitor.check(history.rounds + [result.record]), result.record)
    if action == 'rollback':
      result.record['goodhart']['rollback_to'] = result.record['goodhart']['best_round']
    key_data = jax.random.key_data(jax.random.key(rounds.derive_seed(config.seed, round_index,
                                                                     'train')))
    checkpointer.save(round_index, result.lora, result.opt_state, key_data,
                      {'round': round_index, 'record': result.record})
    history.add_round(result.record)
    run_dir.save_progress(history)
    run_dir.log_round(result.record)
    run_dir.say(console_lib.format_round_table(
        history.rounds[-1], history.rounds[-2] if len(history.rounds) > 1 else None))
    lora = _next_adapters(exp, checkpointer, result.record, result.lora, run_dir.say)
    if action == 'stop':
      run_dir.say(f'stopping after round {round_index} (--on_goodhart=stop); every checkpoint '
                  f'is kept in {config.run_dir}')
      break
  run_dir.save_results(history)
  if history.rounds:
    run_dir.write_report()
  return history


def _restore(exp: Experiment, checkpointer, last_round: int, history):
  """Adapters the next round starts from, and the history rebuilt from every checkpoint."""
  opt_like = exp.trainer.init_opt_state(exp.initial_lora)
  lora, _, _, _ = checkpointer.restore(last_round, exp.initial_lora, opt_like)
  for round_index in range(1, last_round + 1):
    history.add_round(checkpointer.restore_meta(round_index)['record'])
  return _next_adapters(exp, checkpointer, history.rounds[-1], lora), history


def _next_adapters(exp: Experiment, checkpointer, record: dict, lora, say=print):
  """The round's own adapters, or after a Goodhart rollback those of the best round."""
  target = (record.get('goodhart') or {}).get('rollback_to')
  if target is None:
    return lora
  say(f'rolling back: round {record["cycle"] + 1} starts from the adapters of '
      + ('the base model' if target == 0 else f'round {target}'))
  if target == 0:
    return exp.initial_lora
  opt_like = exp.trainer.init_opt_state(exp.initial_lora)
  return checkpointer.restore(target, exp.initial_lora, opt_like)[0]
