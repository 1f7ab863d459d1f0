"""Everything that defines a run, in one place: `RunConfig`.

Each field carries its help text and, where the value names one of the library's own
tables (filters, judges, backends, presets...), that table as its choices; the driver's
flags (`run_flags.py`) and the config files (`config_files.py`) are derived from the
fields, never restated. Defaults follow the original experiment.
"""

import dataclasses
import math
import pathlib
import re
import types
import typing

import jax

from inversion_jax import parallel
from inversion_jax.decode import prompts as prompts_lib
from inversion_jax.decode.sampling import SamplingConfig
from inversion_jax.errors import UserError
from inversion_jax.goodhart import monitor as monitor_lib
from inversion_jax.loop import presets as presets_lib
from inversion_jax.loop import selection
from inversion_jax.nn import config as config_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn import quantize as quantize_lib
from inversion_jax.quality import heldout
from inversion_jax.scoring import inversion
from inversion_jax.scoring import text as text_lib
from inversion_jax.tasks import bank as bank_lib

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


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything that defines a run; defaults follow the original (DESIGN.md §1)."""

  model: str = setting('smollm2-135m-instruct',
      'Registry name, .gguf file, HF checkpoint dir or hub id.')
  cycles: int = setting(10, 'Rounds of generate -> invert -> select -> train.')
  tasks: int = setting(50, 'Tasks sampled per round (BEFORE and AFTER each).')
  candidates: int = setting(3, 'Commands generated per task.')
  threshold: float = setting(0.5,
      'Keep candidates scoring at least this (not with --target_acceptance).')
  target_acceptance: float | None = setting(None,
      "Calibrate the threshold instead: round 1's BEFORE scores (the base model) set it to keep "
      'the fraction of candidates nearest this (in (0, 1); equal scores are kept together); '
      'recorded in round 1 and fixed for every later round and on resume. Same seed, same value.')
  filter: str = setting('threshold',
      'Selection filter: threshold (V1), reproducibility (V2) or random_matched (a control: as '
      'many candidates as the threshold keeps, drawn uniformly at random from all of them with a '
      'seed from --seed, the round and the phase).',
      choices=tuple(selection.FILTERS))
  temperature: float = setting(0.7, 'Command generation temperature.')
  max_new_tokens: int = setting(100, 'Command generation budget.')
  judge: str = setting('sample',
      'sample: the original sampled 0-10 rating; expected: E[rating] in one pass.',
      choices=inversion.JUDGES)
  scorer: str = setting('reconstruction',
      'Intrinsic score: reconstruction (the original) or hidden-state fidelity.',
      choices=inversion.SCORERS)
  fidelity_layer: int | None = setting(None, 'Fidelity: logit-lens layer (default: the middle).')
  fidelity_k: int = setting(5, 'Fidelity: a token counts if in top-k.')
  repro_m: int = setting(2, 'V2: keep a candidate with at least m-1 similar passing siblings.')
  repro_similarity: float = setting(0.6, 'V2: similarity threshold.')
  repro_weights: tuple[float, float] = setting((0.6, 0.4),
      'V2: weights of embedding similarity and option Jaccard (sum 1).')
  repro_layer: int | None = setting(None, 'V2: hidden layer of the embeddings (default: last).')
  weights: tuple[float, float, float] = setting((0.2, 0.3, 0.5),
      'Weights of token overlap, sequence ratio and judge rating.')
  prompt_style: str = setting(prompts_lib.DEFAULT_STYLE,
      'fewshot (small models) or original.',
      choices=tuple(prompts_lib.STYLES))
  lr: float = setting(2e-4, 'AdamW learning rate (linear decay within a round).')
  batch_size: int = setting(4, 'Training batch size (global).')
  epochs: int = setting(1, 'Training epochs per round.')
  completion_only: bool = setting(False, 'Loss on command tokens only.')
  lora_rank: int = setting(16, 'LoRA rank r.')
  lora_alpha: float = setting(32.0, 'LoRA alpha.')
  lora_dropout: float = setting(0.05, 'LoRA dropout.')
  dtype: str = setting('float32', 'Parameter/compute dtype.', choices=config_lib.DTYPES)
  seed: int = setting(0, 'Seed of every random choice in the run.')
  num_devices: int = setting(1, 'Devices per process.')
  parallel: str = setting('pmap',
      'pmap (replicated weights, rows split) or mesh (jit over a data x model mesh).',
      choices=parallel.BACKENDS)
  shard_params: bool = setting(False,
      'mesh: tensor-parallel weights on the model axis (models too big to replicate).')
  model_axis: int = setting(0, 'With --shard_params: devices sharing the weights (0 = all).')
  max_batch: int = setting(256,
      'Rows decoded together (one wave, one decode loop; memory grows with it).')
  eval_every: int = setting(1,
      'Evaluate real quality on the held-out set every N rounds (0 = never).')
  after_every: int = setting(1,
      'Run the AFTER phase every k rounds and in the last (1 = every round; 0 = the last only). A '
      "round without AFTER reads its intrinsic change from the next round's BEFORE (same adapters,"
      ' other tasks) and its early-warning indicators from its own BEFORE. --preset=original: 1 '
      'unless given.')
  eval_tasks: int = setting(0,
      'Evaluate a stratified subset of this many held-out tasks (0 = all).')
  eval_split: str = setting('test', 'Held-out split: test (all) or small.', choices=heldout.SPLITS)
  on_goodhart: str = setting('warn',
      'When the score rises while held-out quality falls (or an indicator jumps): warn, stop the '
      "run, or roll back to the best round's adapters.",
      choices=monitor_lib.ACTIONS)
  goodhart_tolerance: float = setting(0.05,
      "The gold event's drop: graded held-out quality this far (absolute) below the best "
      'evaluation so far alarms (goodhart_event.py).')
  preset: str = setting('none',
      'original: every setting of the original experiment (its prompts, top-k 50, generation to '
      'EOS, its task bank, clipping 1.0, PEFT init...); flags given explicitly still win.',
      choices=tuple(presets_lib.PRESETS))
  task_bank: str = setting('default',
      'Task bank: default (ours) or original.',
      choices=tuple(bank_lib.BANKS))
  top_k: int | None = setting(None, 'Sample from the top k tokens (unset: all).')
  top_p: float | None = setting(None, 'Nucleus sampling mass (unset: 1).')
  stop_at_newline: bool = setting(True,
      'Stop a row at its first newline; --nostop_at_newline runs to EOS as the original did (then '
      'keeps the first line).')
  command_cleaning: str = setting('ours',
      'How a generation becomes a command: ours also skips a ``` fence line.',
      choices=tuple(text_lib.CLEANERS))
  max_grad_norm: float | None = setting(None,
      'Clip gradients to this global norm (unset: no clipping).')
  lora_init: str = setting('he',
      'LoRA A init: he (He-uniform) or peft (kaiming_uniform(a=sqrt(5))).',
      choices=tuple(model_lib.LORA_INITS))
  bos: str = setting('always',
      "BOS before every prompt (always), or as the tokenizer's config says.",
      choices=BOS_RULES)
  quantize: str = setting('none',
      'Generation weights: int8 = weight-only int8 block projections (per-channel scales, '
      'dequantized inside the matmul); training stays in --dtype.',
      choices=quantize_lib.MODES)
  output: str = setting('runs', 'Directory holding runs.')
  name: str = setting('v1', 'Run name: the run lives in <output>/<name>.')

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
    if self.dtype not in config_lib.DTYPES:
      raise UserError(f'--dtype must be one of {", ".join(config_lib.DTYPES)}, got {self.dtype!r}')

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
