"""Everything that defines a run, in one place: `RunConfig`, nested by the part of the loop
each setting belongs to (generation, scoring, selection, train, lora, evaluation, monitor,
devices); each group validates itself and builds the library object it configures.

Each field carries its help text and, where the value names one of the library's own
tables (filters, judges, backends, presets...), that table as its choices; the driver's
flags (`run_flags.py`) and the config files (`config_files.py`) are derived from the
fields (`flat_fields`), never restated. A setting's flat name (its flag) is unique over
all groups, so flags, config files and run_config.json stay flat and every stored run
reads alike. Defaults follow the original experiment.
"""

import dataclasses
import math
import pathlib
import re
import types
import typing

import jax

from inversion_jax import parallel as parallel_lib
from inversion_jax.decode import prompts as prompts_lib
from inversion_jax.decode.sampling import SamplingConfig
from inversion_jax.errors import UserError
from inversion_jax.goodhart import monitor as monitor_lib
from inversion_jax.loop import presets as presets_lib
from inversion_jax.loop import selection
from inversion_jax.nn import config as config_lib
from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn import quantize as quantize_lib
from inversion_jax.quality import heldout
from inversion_jax.scoring import inversion
from inversion_jax.scoring import text as text_lib
from inversion_jax.tasks import bank as bank_lib
from inversion_jax.train import training

# always: BOS starts every prompt (how every figure in BUILD_NOTES was made, also for
# SmolLM2, whose GGUF says add_bos_token = false); tokenizer: as its config says (HF's way).
BOS_RULES = ('always', 'tokenizer')


def setting(default, help_text: str, choices: tuple | None = None):
  """A RunConfig field: its default, its help, and the table its value must come from."""
  return dataclasses.field(default=default, metadata={'help': help_text, 'choices': choices})


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


def _check_positive(settings, names):
  for name in names:
    if getattr(settings, name) < 1:
      raise UserError(f'--{name} must be a positive integer, got {getattr(settings, name)}')


def _check_nonnegative(settings, names):
  for name in names:
    if getattr(settings, name) < 0:
      raise UserError(f'--{name} must be >= 0, got {getattr(settings, name)}')


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
  """How a command is sampled and read off the generation (and what decoding may hold)."""

  temperature: float = setting(0.7, 'Command generation temperature.')
  max_new_tokens: int = setting(100, 'Command generation budget.')
  top_k: int | None = setting(None, 'Sample from the top k tokens (unset: all).')
  top_p: float | None = setting(None, 'Nucleus sampling mass (unset: 1).')
  stop_at_newline: bool = setting(True,
      'Stop a row at its first newline; --nostop_at_newline runs to EOS as the original did (then '
      'keeps the first line).')
  prompt_style: str = setting(prompts_lib.DEFAULT_STYLE,
      'fewshot (small models) or original.',
      choices=tuple(prompts_lib.STYLES))
  bos: str = setting('always',
      "BOS before every prompt (always), or as the tokenizer's config says.",
      choices=BOS_RULES)
  max_batch: int = setting(256,
      'Rows decoded together (one wave, one decode loop; memory grows with it).')
  quantize: str = setting('none',
      'Generation weights: int8 = weight-only int8 block projections (per-channel scales, '
      'dequantized inside the matmul); training stays in --dtype.',
      choices=quantize_lib.MODES)

  def validate(self):
    _check_positive(self, ('max_new_tokens', 'max_batch'))
    if self.temperature < 0:
      raise UserError(f'--temperature must be >= 0, got {self.temperature}')
    if self.top_k is not None and self.top_k < 1:
      raise UserError(f'--top_k must be >= 1 (or unset for the whole vocabulary), got {self.top_k}')
    if self.top_p is not None and not 0 < self.top_p <= 1:
      raise UserError(f'--top_p must be in (0, 1], got {self.top_p}')
    prompts_lib.get_style(self.prompt_style)
    if self.bos not in BOS_RULES:
      raise UserError(f'unknown --bos {self.bos!r}; choose one of {", ".join(BOS_RULES)}')
    quantize_lib.check(self.quantize)

  def sampling(self, temperature: float, max_new_tokens: int) -> SamplingConfig:
    """One of the three calls' sampling, with the run's top-k / top-p / stopping rule."""
    return SamplingConfig(temperature, max_new_tokens, top_k=self.top_k, top_p=self.top_p,
                          stop_at_newline=self.stop_at_newline)


@dataclasses.dataclass(frozen=True)
class ScoringSettings:
  """The intrinsic score: how a candidate's reconstruction (or fidelity) and rating combine."""

  judge: str = setting('sample',
      'sample: the original sampled 0-10 rating; expected: E[rating] in one pass.',
      choices=inversion.JUDGES)
  scorer: str = setting('reconstruction',
      'Intrinsic score: reconstruction (the original) or hidden-state fidelity.',
      choices=inversion.SCORERS)
  fidelity_layer: int | None = setting(None, 'Fidelity: logit-lens layer (default: the middle).')
  fidelity_k: int = setting(5, 'Fidelity: a token counts if in top-k.')
  weights: tuple[float, float, float] = setting((0.2, 0.3, 0.5),
      'Weights of token overlap, sequence ratio and judge rating.')
  command_cleaning: str = setting('ours',
      'How a generation becomes a command: ours also skips a ``` fence line.',
      choices=tuple(text_lib.CLEANERS))

  def validate(self):
    text_lib.ScoreWeights(*self.weights)
    inversion.ScorerConfig(judge=self.judge, scorer=self.scorer, fidelity_k=self.fidelity_k,
                           command_cleaning=self.command_cleaning)

  def scorer_config(self, generation: GenerationSettings,
                    calls: dict[str, tuple[float, int]] | None = None) -> inversion.ScorerConfig:
    """The scorer of the three calls: commands sampled as `generation` says, the
    reconstruction and rating calls at `calls`' (temperature, budget)."""
    calls = calls or {}
    return inversion.ScorerConfig(
        judge=self.judge, scorer=self.scorer, fidelity_layer=self.fidelity_layer,
        fidelity_k=self.fidelity_k, weights=text_lib.ScoreWeights(*self.weights),
        command_cleaning=self.command_cleaning,
        generation=generation.sampling(generation.temperature, generation.max_new_tokens),
        **{call: generation.sampling(*sampling) for call, sampling in calls.items()})


@dataclasses.dataclass(frozen=True)
class SelectionSettings:
  """Which scored candidates become training data."""

  filter: str = setting('threshold',
      'Selection filter: threshold (V1), reproducibility (V2) or random_matched (a control: as '
      'many candidates as the threshold keeps, drawn uniformly at random from all of them with a '
      'seed from --seed, the round and the phase).',
      choices=tuple(selection.FILTERS))
  threshold: float = setting(0.5,
      'Keep candidates scoring at least this (not with --target_acceptance).')
  target_acceptance: float | None = setting(None,
      "Calibrate the threshold instead: round 1's BEFORE scores (the base model) set it to keep "
      'the fraction of candidates nearest this (in (0, 1); equal scores are kept together); '
      'recorded in round 1 and fixed for every later round and on resume. Same seed, same value.')
  repro_m: int = setting(2, 'V2: keep a candidate with at least m-1 similar passing siblings.')
  repro_similarity: float = setting(0.6, 'V2: similarity threshold.')
  repro_weights: tuple[float, float] = setting((0.6, 0.4),
      'V2: weights of embedding similarity and option Jaccard (sum 1).')
  repro_layer: int | None = setting(None, 'V2: hidden layer of the embeddings (default: last).')

  def validate(self):
    if not 0.0 <= self.threshold <= 1.0:
      raise UserError(f'--threshold must be in [0, 1], got {self.threshold}')
    if self.target_acceptance is not None:
      selection.check_target(self.target_acceptance)
    self.make_filter(seed=0)  # Any seed: the run's is checked with the run.

  def filter_settings(self, seed: int) -> dict:
    """The settings the chosen filter takes."""
    if self.filter == 'reproducibility':
      return dict(threshold=self.threshold, m=self.repro_m, similarity=self.repro_similarity,
                  weights=tuple(self.repro_weights), layer=self.repro_layer)
    if self.filter == 'random_matched':
      return dict(threshold=self.threshold, seed=seed)
    return dict(threshold=self.threshold)

  def make_filter(self, seed: int) -> selection.Filter:
    return selection.get_filter(self.filter, **self.filter_settings(seed))


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """The optimizer's side of a round (training.TrainConfig keeps its other knobs' defaults)."""

  lr: float = setting(2e-4, 'AdamW learning rate (linear decay within a round).')
  batch_size: int = setting(4, 'Training batch size (global).')
  epochs: int = setting(1, 'Training epochs per round.')
  completion_only: bool = setting(False, 'Loss on command tokens only.')
  max_grad_norm: float | None = setting(None,
      'Clip gradients to this global norm (unset: no clipping).')

  def validate(self):
    _check_positive(self, ('batch_size', 'epochs'))
    if self.lr <= 0:
      raise UserError(f'--lr must be positive, got {self.lr}')
    if self.lr > MAX_LR:
      raise UserError(f'--lr={self.lr} is above {MAX_LR}, where LoRA training wrecks the model '
                      '(the default is 2e-4)')
    if self.max_grad_norm is not None and not self.max_grad_norm > 0:
      raise UserError(f'--max_grad_norm must be > 0 (or unset for no clipping), got '
                      f'{self.max_grad_norm}')

  def train_config(self) -> training.TrainConfig:
    return training.TrainConfig(
        learning_rate=self.lr, batch_size=self.batch_size, epochs=self.epochs,
        completion_only=self.completion_only, max_grad_norm=self.max_grad_norm)


@dataclasses.dataclass(frozen=True)
class LoraSettings:
  """The adapters trained each round."""

  lora_rank: int = setting(16, 'LoRA rank r.')
  lora_alpha: float = setting(32.0, 'LoRA alpha.')
  lora_dropout: float = setting(0.05, 'LoRA dropout.')
  lora_init: str = setting('he',
      'LoRA A init: he (He-uniform) or peft (kaiming_uniform(a=sqrt(5))).',
      choices=tuple(model_lib.LORA_INITS))

  def validate(self):
    _check_positive(self, ('lora_rank',))
    if self.lora_alpha <= 0:
      raise UserError(f'--lora_alpha must be positive, got {self.lora_alpha}')
    if not 0 <= self.lora_dropout < 1:
      raise UserError(f'--lora_dropout must be in [0, 1), got {self.lora_dropout}')
    if self.lora_init not in model_lib.LORA_INITS:
      raise UserError(f'unknown --lora_init {self.lora_init!r}; choose one of '
                      f'{", ".join(model_lib.LORA_INITS)}')

  def lora_config(self) -> lora_lib.LoRAConfig:
    return lora_lib.LoRAConfig(self.lora_rank, self.lora_alpha, self.lora_dropout,
                               init=self.lora_init)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """What is measured when: held-out real quality and the AFTER phase."""

  eval_every: int = setting(1,
      'Evaluate real quality on the held-out set every N rounds (0 = never).')
  eval_tasks: int = setting(0,
      'Evaluate a stratified subset of this many held-out tasks (0 = all).')
  eval_split: str = setting('test', 'Held-out split: test (all) or small.', choices=heldout.SPLITS)
  after_every: int = setting(1,
      'Run the AFTER phase every k rounds and in the last (1 = every round; 0 = the last only). A '
      "round without AFTER reads its intrinsic change from the next round's BEFORE (same adapters,"
      ' other tasks) and its early-warning indicators from its own BEFORE. --preset=original: 1 '
      'unless given.')

  def validate(self):
    _check_nonnegative(self, ('eval_every', 'eval_tasks', 'after_every'))
    if self.eval_every and self.eval_split not in heldout.SPLITS:
      raise UserError(f'unknown held-out split {self.eval_split!r}; choose one of '
                      f'{", ".join(heldout.SPLITS)}')


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
  """What the Goodhart monitor does when the score rises while real quality falls."""

  on_goodhart: str = setting('warn',
      'When the score rises while held-out quality falls (or an indicator jumps): warn, stop the '
      "run, or roll back to the best round's adapters.",
      choices=monitor_lib.ACTIONS)
  goodhart_tolerance: float = setting(0.05,
      "The gold event's drop: graded held-out quality this far (absolute) below the best "
      'evaluation so far alarms (goodhart_event.py).')

  def validate(self):
    self.make_monitor()

  def make_monitor(self) -> monitor_lib.GoodhartMonitor:
    return monitor_lib.GoodhartMonitor(self.on_goodhart, self.goodhart_tolerance)


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
  """Where the run's programs run and how the weights are placed."""

  num_devices: int = setting(1, 'Devices per process.')
  parallel: str = setting('pmap',
      'pmap (replicated weights, rows split) or mesh (jit over a data x model mesh).',
      choices=parallel_lib.BACKENDS)
  shard_params: bool = setting(False,
      'mesh: tensor-parallel weights on the model axis (models too big to replicate).')
  model_axis: int = setting(0, 'With --shard_params: devices sharing the weights (0 = all).')

  def validate(self):
    _check_positive(self, ('num_devices',))
    _check_nonnegative(self, ('model_axis',))
    if self.num_devices > jax.local_device_count():
      raise UserError(f'--num_devices={self.num_devices} but only {jax.local_device_count()} '
                      'local devices are visible')
    parallel_lib.check_settings(self.parallel, self.shard_params, self.model_axis)

  def make_backend(self, model_config) -> parallel_lib.Backend:
    return parallel_lib.make_backend(self.parallel, self.num_devices,
                                     shard_params=self.shard_params, model_axis=self.model_axis,
                                     model_config=model_config)


# The groups of RunConfig: attribute -> settings class. Every setting's name is unique over
# all of them, so the flat form (flags, config files, run_config.json) names it alone.
GROUPS = {
    'generation': GenerationSettings, 'scoring': ScoringSettings,
    'selection': SelectionSettings, 'train': TrainSettings, 'lora': LoraSettings,
    'evaluation': EvalSettings, 'monitor': MonitorSettings, 'devices': DeviceSettings,
}


@dataclasses.dataclass(frozen=True, init=False)
class RunConfig:
  """Everything that defines a run, grouped by the part of the loop it sets; defaults follow
  the original (DESIGN.md §1).

  Built from the flat form, one keyword per setting as the flags name it
  (`RunConfig(cycles=3, lr=1e-3)`), or from groups (`RunConfig(train=TrainSettings(...))`);
  `as_dict()` is the flat form again (what run_config.json stores: one schema for every
  run, old or new). Read a setting through its group: `config.train.lr`.
  """

  model: str = setting('smollm2-135m-instruct',
      'Registry name, .gguf file, HF checkpoint dir or hub id.')
  cycles: int = setting(10, 'Rounds of generate -> invert -> select -> train.')
  tasks: int = setting(50, 'Tasks sampled per round (BEFORE and AFTER each).')
  candidates: int = setting(3, 'Commands generated per task.')
  seed: int = setting(0, 'Seed of every random choice in the run.')
  dtype: str = setting('float32', 'Parameter/compute dtype.', choices=config_lib.DTYPES)
  preset: str = setting('none',
      'original: every setting of the original experiment (its prompts, top-k 50, generation to '
      'EOS, its task bank, clipping 1.0, PEFT init...); flags given explicitly still win.',
      choices=tuple(presets_lib.PRESETS))
  task_bank: str = setting('default',
      'Task bank: default (ours) or original.',
      choices=tuple(bank_lib.BANKS))
  output: str = setting('runs', 'Directory holding runs.')
  name: str = setting('v1', 'Run name: the run lives in <output>/<name>.')
  generation: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)
  scoring: ScoringSettings = dataclasses.field(default_factory=ScoringSettings)
  selection: SelectionSettings = dataclasses.field(default_factory=SelectionSettings)
  train: TrainSettings = dataclasses.field(default_factory=TrainSettings)
  lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
  evaluation: EvalSettings = dataclasses.field(default_factory=EvalSettings)
  monitor: MonitorSettings = dataclasses.field(default_factory=MonitorSettings)
  devices: DeviceSettings = dataclasses.field(default_factory=DeviceSettings)

  def __init__(self, **settings):
    """Keywords: flat setting names, or group names with their settings objects."""
    grouped = {group: {} for group in GROUPS}
    for key, value in settings.items():
      if key in GROUPS:
        if not isinstance(value, GROUPS[key]):
          raise TypeError(f'RunConfig({key}=...) takes a {GROUPS[key].__name__}')
        grouped[key] = dataclasses.asdict(value) | grouped[key]
      elif key in _GROUP_OF:
        grouped[_GROUP_OF[key]][key] = value
      elif key not in _TOP_LEVEL:
        raise TypeError(f'RunConfig has no setting {key!r}')
    for field in dataclasses.fields(self):
      if field.name in GROUPS:
        value = GROUPS[field.name](**grouped[field.name])
      else:
        value = settings.get(field.name, field.default)
      object.__setattr__(self, field.name, value)

  def replace(self, **settings) -> 'RunConfig':
    """A copy with these settings (flat names) changed."""
    return RunConfig(**(self.as_dict() | settings))

  def validate(self):
    """Raises UserError for values the loop cannot run with: each group checks its own."""
    flat = self.as_dict()
    for name, field in flat_fields().items():
      expected = _type_problem(field.type, flat[name])
      if expected:
        raise UserError(f'--{name} must be {expected}, got {flat[name]!r}')
      values = flat[name] if isinstance(flat[name], tuple) else (flat[name],)
      if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise UserError(f'--{name} must be a finite number, got {flat[name]}')
    if not _PLAIN_NAME.fullmatch(self.name) or self.name in ('.', '..'):
      raise UserError(f'--name={self.name!r} must be a plain name (letters, digits, . _ -): the '
                      'run lives in <output>/<name>; use --output for the directory')
    _check_positive(self, ('cycles', 'tasks', 'candidates'))
    if not 0 <= self.seed < 2**31:
      raise UserError(f'--seed must be in [0, 2^31), got {self.seed}')
    if self.dtype not in config_lib.DTYPES:
      raise UserError(f'--dtype must be one of {", ".join(config_lib.DTYPES)}, got {self.dtype!r}')
    bank_lib.bank_path(self.task_bank)
    presets_lib.check(self.preset)
    for group in GROUPS:
      getattr(self, group).validate()

  def check_layers(self, num_layers: int):
    """Hidden layers must exist in the loaded model."""
    for name, layer in (('fidelity_layer', self.scoring.fidelity_layer),
                        ('repro_layer', self.selection.repro_layer)):
      if layer is not None and not 0 <= layer <= num_layers:
        raise UserError(f'--{name}={layer} is outside the model: choose 0..{num_layers} '
                        f'({num_layers} = the final norm\'s input)')

  @property
  def run_dir(self) -> pathlib.Path:
    return pathlib.Path(self.output).expanduser() / self.name

  def as_dict(self) -> dict:
    """The flat form: every setting by its flag name."""
    flat = {}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      flat.update(dataclasses.asdict(value) if field.name in GROUPS else {field.name: value})
    return flat


_TOP_LEVEL = {field.name: field for field in dataclasses.fields(RunConfig)
              if field.name not in GROUPS}
_GROUP_OF = {field.name: group for group, kind in GROUPS.items()
             for field in dataclasses.fields(kind)}


def group_of(name: str) -> str | None:
  """The group holding setting `name` (`config.<group>.<name>`), None at the top level."""
  return _GROUP_OF.get(name)


_FLAT_FIELDS = _TOP_LEVEL | {field.name: field for kind in GROUPS.values()
                            for field in dataclasses.fields(kind)}


def flat_fields() -> dict[str, dataclasses.Field]:
  """Every setting's field (default, help, choices) by its flat name: what flags and config
  files are made from."""
  return _FLAT_FIELDS
