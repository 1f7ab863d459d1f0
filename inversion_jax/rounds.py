"""One round of the loop as named steps: before -> select -> fine-tune -> after -> record.

As in the original, BEFORE scores fresh candidates with the current model, the selected
ones train it, and AFTER scores candidates for fresh tasks with the trained model. Every
random choice derives from (seed, round, purpose), so a resumed run redoes an
interrupted round exactly as an uninterrupted run would.
"""

import dataclasses
import time

import numpy as np
from absl import logging

from inversion_jax import selection
from inversion_jax import training
from inversion_jax.scoring import inversion
from inversion_jax.tasks import bank as bank_lib

_PURPOSES = {'before_tasks': 1, 'before': 2, 'train': 3, 'after_tasks': 4, 'after': 5}
EXAMPLES_PER_ROUND = 6


def derive_seed(seed: int, round_index: int, purpose: str) -> int:
  """A 31-bit seed for one purpose of one round, independent of every other pair."""
  sequence = np.random.SeedSequence([seed, round_index, _PURPOSES[purpose]])
  return int(sequence.generate_state(1)[0] >> 1)


@dataclasses.dataclass
class RoundResult:
  lora: object
  opt_state: object
  record: dict


def score_round(exp, generator, round_index: int, phase: str) -> inversion.ScoredBatch:
  """Samples fresh tasks and scores `candidates` commands for each."""
  cfg = exp.config
  tasks = bank_lib.sample_tasks(exp.bank, cfg.tasks, derive_seed(cfg.seed, round_index,
                                                                 f'{phase}_tasks'))
  return inversion.score_tasks(generator, exp.style, tasks, cfg.candidates, exp.scorer,
                               derive_seed(cfg.seed, round_index, phase))


def to_candidates(batch: inversion.ScoredBatch) -> list[selection.Candidate]:
  return [selection.Candidate(r.group, r.task.tool, r.task.text, r.command, r.reconstruction,
                              r.score) for r in batch.rows]


def fine_tune(exp, lora, rows, round_index):
  """Trains on the selected rows; returns (lora, opt_state, train record)."""
  opt_state = exp.trainer.init_opt_state(lora)  # A fresh optimizer per round, as originally.
  if not rows:
    logging.warning('round %d: no candidate was selected; training skipped', round_index)
    return lora, opt_state, _train_record([], 0, 'no candidate passed the filter')
  examples = [training.make_example(exp.tokenizer, *exp.style.training_text(
      r.task.tool, r.task.text, r.command)) for r in rows]
  result = exp.trainer.run(lora, opt_state, examples, derive_seed(exp.config.seed, round_index,
                                                                   'train'))
  return result.lora, result.opt_state, _train_record(result.losses, len(examples), None)


def _train_record(losses, num_examples, skipped_reason):
  return {'loss_curve': losses, 'final_loss': losses[-1] if losses else None,
          'mean_loss': float(np.mean(losses)) if losses else None,
          'num_examples': num_examples, 'skipped_reason': skipped_reason}


def run_round(exp, lora, round_index: int) -> RoundResult:
  """Runs round `round_index` (1-based) from adapters `lora`."""
  start = time.perf_counter()
  generator = exp.generator.with_state(exp.inference_state(lora))
  before = score_round(exp, generator, round_index, 'before')
  keep = exp.filter.select(to_candidates(before))
  selected = [row for row, k in zip(before.rows, keep) if k]
  train_start = time.perf_counter()
  lora, opt_state, train = fine_tune(exp, lora, selected, round_index)
  train_seconds = time.perf_counter() - train_start
  generator = generator.with_state(exp.inference_state(lora))
  after = score_round(exp, generator, round_index, 'after')
  record = {
      'cycle': round_index,
      'before': phase_record(before, keep),
      'after': phase_record(after, exp.filter.select(to_candidates(after))),
      'train': train,
      'timings': _timings(before, after, train_seconds, time.perf_counter() - start),
      'tokens_generated': before.tokens_generated + after.tokens_generated,
      'examples': example_rows(before, keep),
  }
  record['improvement'] = {
      'score_delta': record['after']['mean_score'] - record['before']['mean_score'],
      'acceptance_delta': record['after']['acceptance_rate'] - record['before']['acceptance_rate'],
  }
  return RoundResult(lora, opt_state, record)


def phase_record(batch: inversion.ScoredBatch, keep: np.ndarray) -> dict:
  scores = batch.scores
  judges = np.array([r.judge for r in batch.rows])
  return {
      'mean_score': float(scores.mean()), 'acceptance_rate': float(np.mean(keep)),
      'num_candidates': len(scores), 'num_accepted': int(np.sum(keep)),
      'mean_overlap': float(np.mean([r.overlap for r in batch.rows])),
      'mean_ratio': float(np.mean([r.ratio for r in batch.rows])),
      'mean_judge': float(judges.mean()),
      'empty_commands': int(sum(not r.command for r in batch.rows)),
  }


def _timings(before, after, train_seconds, total):
  timings = {step: before.seconds[step] + after.seconds[step] for step in before.seconds}
  return timings | {'train': train_seconds, 'total': total}


def example_rows(batch: inversion.ScoredBatch, keep, limit=EXAMPLES_PER_ROUND) -> list[dict]:
  return [{'tool': r.task.tool, 'task': r.task.text, 'command': r.command,
           'reconstruction': r.reconstruction, 'rating': r.rating_text, 'score': r.score,
           'kept': bool(k)} for r, k in list(zip(batch.rows, keep))[:limit]]
