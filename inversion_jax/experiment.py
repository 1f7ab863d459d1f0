"""A whole self-improvement run: configuration, set-up, the round loop, resume.

`RunConfig` is the one place flags land. `build` loads the model once, adds LoRA
adapters (zero update, so round 1 starts from the base model) and wires the pieces;
`run` loops over rounds, checkpointing each completed round with Orbax and writing
progress.json after it, and on `resume` continues after the last complete round.
"""

import dataclasses
import math
import pathlib
import re
import types
import typing

import jax

from inversion_jax import checkpointing
from inversion_jax import errors
from inversion_jax import generation
from inversion_jax import history as history_lib
from inversion_jax import lora as lora_lib
from inversion_jax import metrics as metrics_lib
from inversion_jax import monitor as monitor_lib
from inversion_jax import model as model_lib
from inversion_jax import parallel
from inversion_jax import presets as presets_lib
from inversion_jax import prompts as prompts_lib
from inversion_jax import quantize as quantize_lib
from inversion_jax import rounds
from inversion_jax import run_dir as run_dir_lib
from inversion_jax import selection
from inversion_jax import training
from inversion_jax.errors import UserError
from inversion_jax.loading import registry
from inversion_jax.parallel import distributed
from inversion_jax.parallel import footprint
from inversion_jax.quality import evaluation
from inversion_jax.quality import heldout
from inversion_jax.sampling import SamplingConfig
from inversion_jax.scoring import inversion
from inversion_jax.scoring import text as text_lib
from inversion_jax.tasks import bank as bank_lib


_PLAIN_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9._-]*')
# LoRA learning rates in use are 1e-5..1e-3 (the default 2e-4); --lr=1e9 ran with only a
# warning and turned every command into prose (quality 0.19 -> 0.00). Refused above this.
MAX_LR = 0.1


def _type_problem(annotation, value) -> str | None:
  """What `value` should be when it does not fit the field's annotation (int is not bool,
  a float field takes an int), else None; one check for every field, present and future."""
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    options = typing.get_args(annotation)
    if value is None and type(None) in options:
      return None
    inner = [t for t in options if t is not type(None)]
    problem = _type_problem(inner[0], value) if len(inner) == 1 else None
    return problem and f'{problem} (or unset)'
  if typing.get_origin(annotation) is tuple:
    args = typing.get_args(annotation)
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length.
      bad = not isinstance(value, (tuple, list)) or any(_type_problem(args[0], v) for v in value)
      return 'a list of values' if bad else None
    if not isinstance(value, (tuple, list)) or len(value) != len(args) or any(
        _type_problem(arg, item) for arg, item in zip(args, value)):
      return f'{len(args)} values'
    return None
  if annotation is bool:
    return None if isinstance(value, bool) else 'true or false'
  if annotation is int:
    return None if isinstance(value, int) and not isinstance(value, bool) else 'an integer'
  if annotation is float:
    return None if isinstance(value, (int, float)) and not isinstance(value, bool) else 'a number'
  if annotation is str:
    return None if isinstance(value, str) else 'a string'
  return None


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines a run; defaults follow the original (DESIGN.md §1)."""

  model: str = 'smollm2-135m-instruct'
  cycles: int = 10
  tasks: int = 50
  candidates: int = 3
  threshold: float = 0.5
  # Set the threshold from round 1's BEFORE scores (the base model) to keep this fraction;
  # None: use `threshold` as given (selection.calibrate_threshold, rounds.phase_filter).
  target_acceptance: float | None = None
  filter: str = 'threshold'
  temperature: float = 0.7
  max_new_tokens: int = 100
  judge: str = 'sample'
  scorer: str = 'reconstruction'
  fidelity_layer: int | None = None  # None: the model's middle layer.
  fidelity_k: int = 5
  repro_m: int = 2
  repro_similarity: float = 0.6
  repro_weights: tuple[float, float] = (0.6, 0.4)
  repro_layer: int | None = None  # None: the model's last layer (the final norm's input).
  weights: tuple[float, float, float] = (0.2, 0.3, 0.5)
  prompt_style: str = prompts_lib.DEFAULT_STYLE
  lr: float = 2e-4
  batch_size: int = 4
  epochs: int = 1
  completion_only: bool = False
  lora_rank: int = 16
  lora_alpha: float = 32.0
  lora_dropout: float = 0.05
  dtype: str = 'float32'
  seed: int = 0
  num_devices: int = 1  # Devices per process.
  parallel: str = 'pmap'  # pmap | mesh (parallel/); one device runs plain jit either way.
  shard_params: bool = False  # mesh: tensor-parallel weights on the 'model' axis.
  model_axis: int = 0  # Devices sharing the weights with --shard_params; 0 = all.
  max_batch: int = 256
  eval_every: int = 1  # Held-out evaluation every N rounds (and the last); 0 = never.
  # AFTER every k rounds and in the last; 0 = the last only (rounds.runs_after). A round
  # without AFTER reads its intrinsic change from the next round's BEFORE (same adapters).
  after_every: int = 1
  eval_tasks: int = 0  # A stratified subset of the held-out split; 0 = all of it.
  eval_split: str = 'test'
  on_goodhart: str = 'warn'  # off | warn | stop | rollback (monitor.py).
  goodhart_tolerance: float = 0.05  # The gold event's delta, absolute (goodhart_event.py).
  # The original's set-up, each also a flag of its own (presets.py; README "Where we differ").
  preset: str = 'none'  # Recorded by presets.apply: which preset filled the unset flags.
  task_bank: str = 'default'  # default (ours) | original (its 35 templates and sampling).
  top_k: int | None = None  # Sampling in all three calls; the original: 50 (HF's default).
  top_p: float | None = None
  stop_at_newline: bool = True  # False: generate to EOS / budget, keep the first line.
  command_cleaning: str = 'ours'  # ours | original (scoring/text.py).
  max_grad_norm: float | None = None  # The original (HF Trainer): 1.0.
  lora_init: str = 'he'  # he | peft (PEFT's kaiming_uniform(a=sqrt(5))).
  bos: str = 'always'  # always (every measurement here) | tokenizer (its add_bos_token).
  quantize: str = 'none'  # none | int8: weight-only int8 block projections for generation.
  output: str = 'runs'
  name: str = 'v1'

  def validate(self):
    """Raises UserError for values the loop cannot run with."""
    for field in dataclasses.fields(self):
      expected = _type_problem(field.type, getattr(self, field.name))
      if expected:
        raise UserError(f'--{field.name} must be {expected}, got {getattr(self, field.name)!r}')
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      values = value if isinstance(value, tuple) else (value,)
      if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise UserError(f'--{field.name} must be a finite number, got {value}')
    if not _PLAIN_NAME.fullmatch(self.name) or self.name in ('.', '..'):
      raise UserError(f'--name={self.name!r} must be a plain name (letters, digits, . _ -): the '
                      'run lives in <output>/<name>; use --output for the directory')
    for field in ('cycles', 'tasks', 'candidates', 'batch_size', 'epochs', 'lora_rank',
                  'max_new_tokens', 'num_devices', 'max_batch'):
      if getattr(self, field) < 1:
        raise UserError(f'--{field} must be a positive integer, got {getattr(self, field)}')
    for field in ('eval_every', 'eval_tasks', 'model_axis', 'after_every'):
      if getattr(self, field) < 0:
        raise UserError(f'--{field} must be >= 0, got {getattr(self, field)}')
    monitor_lib.GoodhartMonitor(self.on_goodhart, self.goodhart_tolerance)
    if self.eval_every and self.eval_split not in heldout.SPLITS:
      raise UserError(f'unknown held-out split {self.eval_split!r}; choose one of '
                      f'{", ".join(heldout.SPLITS)}')
    if not 0.0 <= self.threshold <= 1.0:
      raise UserError(f'--threshold must be in [0, 1], got {self.threshold}')
    if self.target_acceptance is not None:
      selection.check_target(self.target_acceptance)
    if self.temperature < 0:
      raise UserError(f'--temperature must be >= 0, got {self.temperature}')
    if self.lr <= 0:
      raise UserError(f'--lr must be positive, got {self.lr}')
    if self.lr > MAX_LR:
      raise UserError(f'--lr={self.lr} is above {MAX_LR}, where LoRA training wrecks the model '
                      '(the default is 2e-4)')
    if not 0 <= self.seed < 2**31:
      raise UserError(f'--seed must be in [0, 2^31), got {self.seed}')
    if self.lora_alpha <= 0:
      raise UserError(f'--lora_alpha must be positive, got {self.lora_alpha}')
    if not 0 <= self.lora_dropout < 1:
      raise UserError(f'--lora_dropout must be in [0, 1), got {self.lora_dropout}')
    if self.num_devices > jax.local_device_count():
      raise UserError(f'--num_devices={self.num_devices} but only {jax.local_device_count()} '
                      'local devices are visible')
    parallel.check_settings(self.parallel, self.shard_params, self.model_axis)
    if self.top_k is not None and self.top_k < 1:
      raise UserError(f'--top_k must be >= 1 (or unset for the whole vocabulary), got {self.top_k}')
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise UserError(f'--top_p must be in (0, 1], got {self.top_p}')
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      raise UserError(f'--max_grad_norm must be > 0 (or unset for no clipping), got '
                      f'{self.max_grad_norm}')
    if self.lora_init not in model_lib.LORA_INITS:
      raise UserError(f'unknown --lora_init {self.lora_init!r}; choose one of '
                      f'{", ".join(model_lib.LORA_INITS)}')
    bank_lib.bank_path(self.task_bank)
    if self.bos not in BOS_RULES:
      raise UserError(f'unknown --bos {self.bos!r}; choose one of {", ".join(BOS_RULES)}')
    presets_lib.check(self.preset)
    quantize_lib.check(self.quantize)
    text_lib.ScoreWeights(*self.weights)
    prompts_lib.get_style(self.prompt_style)
    inversion.ScorerConfig(judge=self.judge, scorer=self.scorer, fidelity_k=self.fidelity_k,
                           command_cleaning=self.command_cleaning)
    selection.get_filter(self.filter, **self.filter_settings())
    if self.dtype not in ('float32', 'bfloat16'):
      raise UserError(f"--dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")

  def filter_settings(self) -> dict:
    """The settings the chosen filter takes."""
    if self.filter == 'reproducibility':
      return dict(threshold=self.threshold, m=self.repro_m, similarity=self.repro_similarity,
                  weights=tuple(self.repro_weights), layer=self.repro_layer)
    if self.filter == 'random_matched':
      return dict(threshold=self.threshold, seed=self.seed)
    return dict(threshold=self.threshold)

  def check_layers(self, num_layers: int):
    """Hidden layers must exist in the loaded model."""
    for name in ('fidelity_layer', 'repro_layer'):
      layer = getattr(self, name)
      if layer is not None and not 0 <= layer <= num_layers:
        raise UserError(f'--{name}={layer} is outside the model: choose 0..{num_layers} '
                        f'({num_layers} = the final norm\'s input)')

  @property
  def run_dir(self) -> pathlib.Path:
    return pathlib.Path(self.output).expanduser() / self.name

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  def sampling(self, temperature: float, max_new_tokens: int) -> SamplingConfig:
    """One of the three calls' sampling, with the run's top-k / top-p / stopping rule."""
    return SamplingConfig(temperature, max_new_tokens, top_k=self.top_k, top_p=self.top_p,
                          stop_at_newline=self.stop_at_newline)


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

  def count_tokens(self, text: str) -> int:
    return len(self.tokenizer.encode(text))

  def inference_state(self, lora):
    """Weights for generation: the adapters folded into the base kernels."""
    return lora_lib.merge_into_base(lora, self.base, self.lora_config, self.plain_state)


# always: BOS starts every prompt (how every figure in BUILD_NOTES was made, also for
# SmolLM2, whose GGUF says add_bos_token = false); tokenizer: as its config says (HF's way).
BOS_RULES = ('always', 'tokenizer')

# The original's temperature and budget of the reconstruction and rating calls.
_CALL_SAMPLING = {'reconstruction': (0.3, 50), 'rating': (0.1, 5)}


def build(config: RunConfig, model_source=None) -> Experiment:
  """Loads the model (or takes `model_source` = (ModelConfig, flat params, tokenizer))."""
  config.validate()
  model_config, flat, tokenizer = model_source or registry.load_model_source(config.model)
  config.check_layers(model_config.num_layers)
  backend = parallel.make_backend(config.parallel, config.num_devices,
                                  shard_params=config.shard_params,
                                  model_axis=config.model_axis, model_config=model_config)
  # Each tensor placed straight into its sharding; one base for every stage (footprint.py).
  plain_graphdef, plain_state = model_lib.from_flat_params(
      model_config.replace(dtype=config.dtype), flat, place=backend.param_sharding)
  lora_config = lora_lib.LoRAConfig(config.lora_rank, config.lora_alpha, config.lora_dropout,
                                    init=config.lora_init)
  run_state = footprint.run_state(plain_graphdef, plain_state, backend, lora_config,
                                  seed=config.seed)
  graphdef, lora, base, plain_state = (run_state.graphdef, run_state.lora, run_state.base,
                                       run_state.plain)
  train_config = training.TrainConfig(
      learning_rate=config.lr, batch_size=config.batch_size, epochs=config.epochs,
      completion_only=config.completion_only, max_grad_norm=config.max_grad_norm)
  return Experiment(
      config=config, graphdef=graphdef, base=base, initial_lora=lora, plain_state=plain_state,
      lora_config=lora_config, tokenizer=tokenizer,
      generator=generation.Generator(
          plain_graphdef, plain_state, tokenizer, stop_strings=('\n',),
          max_batch=config.max_batch, add_bos=config.bos == 'always' or tokenizer.add_bos,
          quantize=config.quantize, backend=backend, show_progress=backend.is_main),
      trainer=training.Trainer(graphdef, base, train_config, pad_id=tokenizer.pad_id,
                               backend=backend, show_progress=backend.is_main),
      backend=backend,
      style=prompts_lib.get_style(config.prompt_style),
      bank=bank_lib.named_bank(config.task_bank),
      filter=selection.get_filter(config.filter, **config.filter_settings()),
      scorer=inversion.ScorerConfig(
          judge=config.judge, scorer=config.scorer, fidelity_layer=config.fidelity_layer,
          fidelity_k=config.fidelity_k, weights=text_lib.ScoreWeights(*config.weights),
          command_cleaning=config.command_cleaning,
          generation=config.sampling(config.temperature, config.max_new_tokens),
          reconstruction=config.sampling(*_CALL_SAMPLING['reconstruction']),
          rating=config.sampling(*_CALL_SAMPLING['rating']),
      ),
      heldout=(evaluation.subset(heldout.load(config.eval_split), config.eval_tasks)
               if config.eval_every else []),
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
  exp = build(config, model_source)  # Before the run dir exists: a failed load leaves nothing.
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
    if config.target_acceptance is not None and exp.calibration is None:
      raise UserError(f'{config.run_dir} has no calibrated threshold in round 1; it cannot be '
                      'resumed with --target_acceptance')
    done = first_round - 1
    run_dir.say(f'{config.run_dir} already has all {done} rounds; its results:'
                if done >= config.cycles else f'resuming {config.run_dir} after round {done}')
  monitor = monitor_lib.GoodhartMonitor(config.on_goodhart, config.goodhart_tolerance)
  base = None
  if first_round == 1 and config.eval_every:
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
    run_dir.say(history_lib.format_round_table(
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
