"""The inversion scorer: generate -> invert -> rate -> combine, each one batched call.

Every (task, candidate) row of a round goes through the sampler together: all commands
in one call, all reconstructions in one call, all ratings in one call (or one forward
pass with `judge='expected'`). The text parts and the weights are the original's
(`scoring.text`); only the batching and the expected-judge option are new.
"""

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from inversion_jax.decode import prompts as prompts_lib
from inversion_jax.decode.sampling import SamplingConfig
from inversion_jax.errors import UserError
from inversion_jax.scoring import text as text_lib
from inversion_jax.tasks.bank import Task

JUDGES = ('sample', 'expected')
SCORERS = ('reconstruction', 'fidelity')


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
  """The original's sampling settings for the three calls, and the score's weights."""

  judge: str = 'sample'
  scorer: str = 'reconstruction'  # or 'fidelity': the hidden-state inversion fidelity.
  fidelity_layer: int | None = None  # None: the model's middle layer.
  fidelity_k: int = 5
  command_cleaning: str = 'ours'  # or 'original' (text.CLEANERS).
  weights: text_lib.ScoreWeights = text_lib.ScoreWeights()
  generation: SamplingConfig = SamplingConfig(temperature=0.7, max_new_tokens=100)
  reconstruction: SamplingConfig = SamplingConfig(temperature=0.3, max_new_tokens=50)
  rating: SamplingConfig = SamplingConfig(temperature=0.1, max_new_tokens=5)

  def __post_init__(self):
    if self.judge not in JUDGES:
      raise UserError(f'unknown judge {self.judge!r}; choose one of {", ".join(JUDGES)}')
    if self.scorer not in SCORERS:
      raise UserError(f'unknown scorer {self.scorer!r}; choose one of {", ".join(SCORERS)}')
    if self.fidelity_k < 1:
      raise UserError(f'--fidelity_k must be >= 1, got {self.fidelity_k}')
    if self.command_cleaning not in text_lib.CLEANERS:
      raise UserError(f'unknown --command_cleaning {self.command_cleaning!r}; choose one of '
                      f'{", ".join(text_lib.CLEANERS)}')


@dataclasses.dataclass(frozen=True)
class ScoredRow:
  """One candidate command for one task, with every intermediate text kept for audit."""

  group: int  # Index of the task in the round.
  task: Task
  raw_command: str
  command: str
  raw_reconstruction: str
  reconstruction: str
  rating_text: str  # The judge's reply ('' with the expected judge).
  overlap: float
  ratio: float
  judge: float
  score: float


@dataclasses.dataclass(frozen=True)
class ScoredBatch:
  rows: list[ScoredRow]
  tokens_generated: int
  seconds: dict[str, float]  # generate / invert / rate

  @property
  def scores(self) -> np.ndarray:
    return np.array([r.score for r in self.rows], np.float64)


def score_tasks(generator, style: prompts_lib.PromptStyle, tasks: Sequence[Task],
                candidates: int, config: ScorerConfig, seed: int) -> ScoredBatch:
  """Generates `candidates` commands per task and scores each by inversion."""
  seconds, tokens = {}, 0
  groups = [g for g in range(len(tasks)) for _ in range(candidates)]
  rows = [tasks[g] for g in groups]

  start = time.perf_counter()
  gen = generator.generate([style.generation(t.tool, t.text) for t in rows], config.generation,
                           seed=seed, desc='generate')
  commands = [text_lib.CLEANERS[config.command_cleaning](c) for c in gen.texts]
  seconds['generate'], tokens = time.perf_counter() - start, tokens + sum(gen.num_tokens)

  if config.scorer == 'fidelity':
    return _fidelity_batch(generator, style, rows, groups, gen.texts, commands, config,
                           seconds, tokens)
  start = time.perf_counter()
  inv = generator.generate([style.reconstruction(t.tool, c) for t, c in zip(rows, commands)],
                           config.reconstruction, seed=seed + 1, desc='invert')
  reconstructions = [text_lib.clean_reconstruction(r) for r in inv.texts]
  seconds['invert'], tokens = time.perf_counter() - start, tokens + sum(inv.num_tokens)

  start = time.perf_counter()
  originals = [t.text for t in rows]
  rating_prompts = [style.rating(o, r) for o, r in zip(originals, reconstructions)]
  if config.judge == 'sample':
    rated = generator.generate(rating_prompts, config.rating, seed=seed + 2, desc='rate')
    rating_texts, tokens = rated.texts, tokens + sum(rated.num_tokens)
    judges = text_lib.parse_ratings(rating_texts)
  else:
    rating_texts, judges = [''] * len(rows), expected_ratings(generator, rating_prompts)
  seconds['rate'] = time.perf_counter() - start

  overlap, ratio = text_lib.text_parts(originals, reconstructions)
  scores = text_lib.combine(overlap, ratio, judges, config.weights)
  scored = [
      ScoredRow(g, t, raw, cmd, raw_rec, rec, rt, float(o), float(r), float(j), float(s))
      for g, t, raw, cmd, raw_rec, rec, rt, o, r, j, s in zip(
          groups, rows, gen.texts, commands, inv.texts, reconstructions, rating_texts, overlap,
          ratio, judges, scores)
  ]
  return ScoredBatch(scored, tokens, seconds)


def fidelity_layer(generator, config: ScorerConfig) -> int:
  layer = config.fidelity_layer
  return generator.config.num_layers // 2 if layer is None else layer


def _fidelity_batch(generator, style, rows, groups, raw, commands, config, seconds, tokens):
  """Scores by hidden-state inversion fidelity: no reconstruction, no rating."""
  start = time.perf_counter()
  prompts = [style.generation(t.tool, t.text) for t in rows]
  scores = generator.fidelity(prompts, [c or ' ' for c in commands],
                              fidelity_layer(generator, config), config.fidelity_k)
  seconds['fidelity'] = time.perf_counter() - start
  scored = [ScoredRow(g, t, r, c, '', '', '', 0.0, 0.0, 0.0, float(s) if c else 0.0)
            for g, t, r, c, s in zip(groups, rows, raw, commands, scores)]
  return ScoredBatch(scored, tokens, seconds)


def digit_token_ids(tokenizer) -> dict[int, list[int]]:
  """Token ids whose text is the digit d (with or without surrounding space), d = 0..9."""
  by_digit: dict[int, list[int]] = {d: [] for d in range(10)}
  for index, text in enumerate(tokenizer.token_texts()):
    stripped = text.strip()
    if len(stripped) == 1 and stripped.isdigit() and stripped.isascii():
      by_digit[int(stripped)].append(index)
  missing = [d for d, ids in by_digit.items() if not ids]
  if missing:
    raise UserError(f'the tokenizer has no token for digits {missing}; use --judge=sample')
  return by_digit


def expected_ratings(generator, prompts: Sequence[prompts_lib.Prompt]) -> np.ndarray:
  """E[rating] / 10 from the next-token distribution, in two batched forward passes.

  The judge's first token is a digit d with probability p(d) (renormalised over digit
  tokens). A leading '1' may begin '10': a second pass on prompt + ' 1' gives
  q = P('0' | '1'), so p(1) splits into p(1)(1 - q) for 1 and p(1) q for 10.
  """
  digits = digit_token_ids(generator.tokenizer)
  first = _softmax(generator.last_token_logits(prompts))
  per_digit = np.stack([first[:, ids].sum(-1) for _, ids in sorted(digits.items())], -1)
  per_digit /= per_digit.sum(-1, keepdims=True)
  after_one = _softmax(generator.last_token_logits(
      [(p.prefix, p.suffix + ' 1') for p in prompts]))
  q = after_one[:, digits[0]].sum(-1)
  expected = per_digit @ np.arange(10, dtype=np.float64) + per_digit[:, 1] * q * (10 - 1)
  return np.clip(expected / 10.0, 0.0, 1.0)


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)
