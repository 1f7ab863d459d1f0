"""One round of the loop as a list of phases: before -> train -> after [-> held-out].

As in the original, BEFORE scores fresh candidates with the current model, the selected
ones train it, and AFTER scores candidates for fresh tasks with the trained model. Each
phase returns flat metrics (`metrics.flatten` prefixes them `phase/`) and its rows (every
generated command with its reconstruction, rating, score, keep decision and validator
verdict); the held-out phase decodes the held-out tasks greedily and grades them. Real
quality is only measured here, never used to select training data. Every random choice
derives from (seed, round, purpose), so a resumed run redoes an interrupted round exactly.

Two run settings shape the phases. `--target_acceptance`: round 1's BEFORE (the base model)
sets the threshold so that the kept fraction of its candidates is nearest the target; that
value is recorded with round 1 (`calibration`) and used by every later phase and round (and on
resume). `--after_every=k`: AFTER runs only in every k-th round and the last (0: the last
only); a round without AFTER gets its intrinsic change from the next round's BEFORE, which
samples the same adapters (on other tasks), and its early-warning indicators from its own
BEFORE (the previous adapters, one round behind; the KL is still the trained adapters').
"""

import dataclasses
import time

import numpy as np
from absl import logging

from inversion_jax.goodhart import early_warning
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.loop import selection
from inversion_jax.quality import evaluation
from inversion_jax.records import original_format
from inversion_jax.scoring import inversion
from inversion_jax.tasks import bank as bank_lib
from inversion_jax.train import training

_PURPOSES = {'before_tasks': 1, 'before': 2, 'train': 3, 'after_tasks': 4, 'after': 5,
             'select_before': 6, 'select_after': 7, 'kl_probe': 8}
EXAMPLES_PER_ROUND = 6


def derive_seed(seed: int, round_index: int, purpose: str) -> int:
  """A 31-bit seed for one purpose of one round, independent of every other pair."""
  sequence = np.random.SeedSequence([seed, round_index, _PURPOSES[purpose]])
  return int(sequence.generate_state(1)[0] >> 1)


@dataclasses.dataclass
class Phase:
  """One phase's flat metrics (unprefixed), its rows and its stage timings; the train phase
  also its loss curve (and why it trained nothing), the signals phase which limits fired."""

  name: str
  metrics: dict
  rows: list[dict]
  seconds: dict
  loss_curve: list[float] = dataclasses.field(default_factory=list)
  skipped_reason: str | None = None
  reasons: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RoundResult:
  lora: object
  opt_state: object
  record: dict
  phases: list[Phase]


def score_round(exp, generator, round_index: int, phase: str) -> inversion.ScoredBatch:
  """Samples fresh tasks and scores `candidates` commands for each."""
  cfg = exp.config
  tasks = bank_lib.sample_tasks(exp.bank, cfg.tasks, derive_seed(cfg.seed, round_index,
                                                                 f'{phase}_tasks'))
  return inversion.score_tasks(generator, exp.style, tasks, cfg.candidates, exp.scorer,
                               derive_seed(cfg.seed, round_index, phase))


def to_candidates(batch: inversion.ScoredBatch, embeddings=None) -> list[selection.Candidate]:
  embeddings = [None] * len(batch.rows) if embeddings is None else embeddings
  return [selection.Candidate(r.group, r.task.tool, r.task.text, r.command, r.reconstruction,
                              r.score, e) for r, e in zip(batch.rows, embeddings)]


def candidates_for(exp, generator, batch) -> tuple[list[selection.Candidate], dict]:
  """The phase's candidates with what the filter needs (embeddings only when it asks)."""
  if 'embeddings' not in exp.filter.needs:
    return to_candidates(batch), {}
  start = time.perf_counter()
  layer = exp.filter.layer if exp.filter.layer is not None else generator.config.num_layers
  embeddings = generator.embed([r.command or ' ' for r in batch.rows], layer=layer)
  return to_candidates(batch, embeddings), {'embed': time.perf_counter() - start}


def phase_filter(exp, round_index: int, name: str, scores) -> selection.Filter:
  """The filter a phase applies: with the calibrated threshold once round 1's BEFORE has
  set it (`--target_acceptance`), drawing (random_matched) from (seed, round, phase)."""
  cfg = exp.config
  target = cfg.selection.target_acceptance
  if target is not None and exp.calibration is None:
    if (round_index, name) != (1, 'before'):
      raise ValueError(f'round {round_index} {name}: the threshold was never calibrated')
    threshold, kept = selection.calibrate_threshold(scores, target)
    exp.calibration = {'target_acceptance': target, 'threshold': threshold,
                       'kept_fraction': kept, 'num_scores': int(len(scores)),
                       'from': 'round 1 before (the base model)'}
    logging.warning('threshold calibrated to %.6f on round 1 BEFORE: keeps %.1f%% (target '
                    '%.1f%%)', threshold, 100 * kept, 100 * target)
  filter_ = exp.filter
  if exp.calibration is not None:
    filter_ = selection.with_threshold(filter_, exp.calibration['threshold'])
  return selection.with_seed(filter_, derive_seed(cfg.seed, round_index, f'select_{name}'))


def intrinsic_phase(exp, generator, round_index: int, name: str) -> tuple[Phase, list]:
  """Scores a phase's candidates, applies the filter, grades every command."""
  batch = score_round(exp, generator, round_index, name)
  candidates, embed_seconds = candidates_for(exp, generator, batch)
  filter_ = phase_filter(exp, round_index, name, batch.scores)
  keep = np.asarray(filter_.select(candidates), bool)
  start = time.perf_counter()
  graded = evaluation.grade(evaluation.items_from_tasks([r.task for r in batch.rows]),
                            [r.command for r in batch.rows], exp.count_tokens)
  seconds = dict(batch.seconds) | embed_seconds | {'validate': time.perf_counter() - start}
  metrics = intrinsic_metrics(batch, keep) | filter_.stats(candidates) | graded.metrics
  metrics['threshold'] = filter_.threshold
  metrics['tokens_generated'] = batch.tokens_generated
  start = time.perf_counter()
  # Agreement only where the early warning reads it: round 1's BEFORE (its baseline), AFTER,
  # and BEFORE in a round without AFTER (the signals' phase then).
  if name == 'after' or round_index == 1 or not runs_after(exp.config, round_index):
    # The V2 filter's embeddings (last layer by default) serve here too: embed once a phase.
    reuse = bool(candidates) and candidates[0].embedding is not None and filter_.layer is None
    metrics['agreement_rate'] = early_warning.agreement_rate(
        generator, [r.command for r in batch.rows], [r.group for r in batch.rows],
        embeddings=[c.embedding for c in candidates] if reuse else None)
    seconds['signals'] = time.perf_counter() - start
  rows = [_row(r, k) | g for r, k, g in zip(batch.rows, keep, graded.rows)]
  selected = [row for row, k in zip(batch.rows, keep) if k]
  return Phase(name, metrics, rows, seconds), selected


def intrinsic_metrics(batch: inversion.ScoredBatch, keep: np.ndarray) -> dict:
  scores = batch.scores
  return {
      'mean_score': float(scores.mean()) if len(scores) else 0.0,
      'acceptance_rate': float(np.mean(keep)) if len(keep) else 0.0,
      'num_candidates': len(scores), 'num_accepted': int(np.sum(keep)),
      'mean_overlap': float(np.mean([r.overlap for r in batch.rows])),
      'mean_ratio': float(np.mean([r.ratio for r in batch.rows])),
      'mean_judge': float(np.mean([r.judge for r in batch.rows])),
      'empty_commands': int(sum(not r.command for r in batch.rows)),
  }


def _row(r: inversion.ScoredRow, kept) -> dict:
  return {'group': r.group, 'tool': r.task.tool, 'intent': r.task.intent, 'task': r.task.text,
          'raw_command': r.raw_command, 'command': r.command,
          'raw_reconstruction': r.raw_reconstruction, 'reconstruction': r.reconstruction,
          'rating': r.rating_text, 'overlap': r.overlap, 'ratio': r.ratio, 'judge': r.judge,
          'score': r.score, 'kept': bool(kept)}


def fine_tune(exp, lora, rows, round_index) -> tuple[object, object, Phase]:
  """Trains on the selected rows; returns (lora, opt_state, train phase)."""
  start = time.perf_counter()
  opt_state = exp.trainer.init_opt_state(lora)  # A fresh optimizer per round, as originally.
  if not rows:
    logging.warning('round %d: no candidate was selected; training skipped', round_index)
    return lora, opt_state, _train_phase([], 0, 'no candidate passed the filter', start)
  examples = [training.make_example(exp.tokenizer, *exp.style.training_text(
      r.task.tool, r.task.text, r.command), add_bos=exp.generator.add_bos) for r in rows]
  result = exp.trainer.run(lora, opt_state, examples, derive_seed(exp.config.seed, round_index,
                                                                   'train'))
  phase = _train_phase(result.losses, len(examples), None, start)
  # Of which steps that met a new batch shape (compiled or loaded it): first round vs steady.
  phase.seconds['train_new_shapes'] = result.new_shape_seconds
  return result.lora, result.opt_state, phase


def _train_phase(losses, num_examples, skipped_reason, start) -> Phase:
  metrics = {'num_examples': num_examples}
  if losses:
    metrics |= {'final_loss': losses[-1], 'mean_loss': float(np.mean(losses)),
                'first_loss': losses[0]}
  return Phase('train', metrics, [], {'train': time.perf_counter() - start},
               loss_curve=list(losses), skipped_reason=skipped_reason)


def heldout_phase(exp, generator, name: str = metrics_lib.HELDOUT_PHASE) -> Phase:
  """Greedy held-out commands of the current weights, graded."""
  graded = evaluation.evaluate_model(generator, exp.style, exp.heldout,
                                     exp.config.generation.max_new_tokens, exp.count_tokens)
  seconds = graded.metrics.pop('seconds')
  return Phase(name, graded.metrics, graded.rows, {'heldout': seconds})


def evaluates(config, round_index: int) -> bool:
  """Whether round `round_index` runs the held-out evaluation (`--eval_every`)."""
  every = config.evaluation.eval_every
  return bool(every) and (round_index % every == 0 or round_index == config.cycles)


def runs_after(config, round_index: int) -> bool:
  """Whether round `round_index` runs AFTER (`--after_every`: every k-th and the last)."""
  every = config.evaluation.after_every
  return round_index == config.cycles or bool(every) and round_index % every == 0


def kl_probe(exp) -> tuple[list, np.ndarray]:
  """KL from base's prompts (as many tasks as a round has, at most `early_warning.KL_PROBES`,
  drawn once a run) and the base model's next-token log-probs there, computed once a
  process: a round then prefills the probe once, with its own weights."""
  if exp.kl_probe is None:
    tasks = bank_lib.sample_tasks(exp.bank, min(exp.config.tasks, early_warning.KL_PROBES),
                                  derive_seed(exp.config.seed, 0, 'kl_probe'))
    prompts = [exp.style.generation(t.tool, t.text) for t in tasks]
    exp.kl_probe = (prompts, early_warning.next_token_log_probs(exp.generator, prompts))
  return exp.kl_probe


def signal_phase(exp, generator, after: Phase, first_metrics: dict) -> Phase:
  """The label-free early-warning signals of the trained model (`early_warning.py`).

  `after` is the phase whose candidates give the indicators: AFTER, or in a round without
  one its BEFORE (`measured_after` = 0 in the signals then).
  """
  start = time.perf_counter()
  prompts, base_log_probs = kl_probe(exp)
  kl = early_warning.kl_from_base(early_warning.next_token_log_probs(generator, prompts),
                                  base_log_probs)
  flat = metrics_lib.flatten(after.name, after.metrics)
  values = early_warning.signals(flat, first_metrics or flat, kl, phase=after.name)
  count, reasons = early_warning.score(values, early_warning.baseline(first_metrics or flat))
  phase = Phase(early_warning.PHASE, values | {'score': count, 'alarm': count >=
                                               early_warning.ALARM_AT,
                                               'measured_after': float(after.name == 'after')},
                [], {'signals': time.perf_counter() - start}, reasons=list(reasons))
  return phase


def run_round(exp, lora, round_index: int, base: Phase | None = None,
              first_metrics: dict | None = None) -> RoundResult:
  """Runs round `round_index` (1-based) from adapters `lora`.

  `base`: the base model's held-out phase, recorded with round 1. `first_metrics`: round
  1's flat metrics (the early-warning baseline; None in round 1 itself).
  """
  start = time.perf_counter()
  generator = exp.generator.with_state(exp.inference_state(lora))
  before, selected = intrinsic_phase(exp, generator, round_index, 'before')
  lora, opt_state, train = fine_tune(exp, lora, selected, round_index)
  generator = generator.with_state(exp.inference_state(lora))
  after = None
  if runs_after(exp.config, round_index):
    after, _ = intrinsic_phase(exp, generator, round_index, 'after')
  if first_metrics is None:
    first_metrics = metrics_lib.flatten('before', before.metrics)
  signal = signal_phase(exp, generator, after or before, first_metrics)
  phases = [p for p in (base, before, train, after, signal) if p is not None]
  if evaluates(exp.config, round_index):
    phases.append(heldout_phase(exp, generator))
  record = make_record(round_index, phases, before.rows, time.perf_counter() - start)
  if after is None:
    record['after_skipped_reason'] = (f'--after_every={exp.config.evaluation.after_every}: '
                                      'the next round\'s BEFORE measures these adapters')
  if round_index == 1 and exp.calibration is not None:
    record['calibration'] = dict(exp.calibration)
  return RoundResult(lora, opt_state, record, phases)


def make_record(round_index: int, phases: list[Phase], example_rows: list[dict],
                total_seconds: float) -> dict:
  """The round's record: flat metrics of every phase, loss curve, timings, examples."""
  flat = {}
  timings: dict[str, float] = {}
  for phase in phases:
    flat |= metrics_lib.flatten(phase.name, phase.metrics)
    if phase.name != metrics_lib.BASE_PHASE:
      for stage, seconds in phase.seconds.items():
        timings[stage] = timings.get(stage, 0.0) + seconds
  for key in ('mean_score', 'acceptance_rate', 'quality', 'strict'):
    if f'before/{key}' in flat and f'after/{key}' in flat:
      flat[f'delta/{key}'] = flat[f'after/{key}'] - flat[f'before/{key}']
  train = next(p for p in phases if p.name == 'train')
  signal = next((p for p in phases if p.name == early_warning.PHASE), None)
  timings['total'] = total_seconds  # Wall-clock: kept out of the metrics, which replay exactly.
  rows = {p.name: p.rows for p in phases}
  return {
      'cycle': round_index,
      # The original's names (before/after/improvement/example_*/timestamp), from the same rows.
      **original_format.cycle_fields(flat, rows.get('before', []), rows.get('after', [])),
      'metrics': flat,
      'loss_curve': train.loss_curve,
      'train_skipped_reason': train.skipped_reason,
      'early_warning': signal.reasons if signal is not None else [],
      'timings': timings,
      'examples': [{k: r[k] for k in ('tool', 'task', 'command', 'reconstruction', 'rating',
                                      'score', 'kept')} for r in example_rows[:EXAMPLES_PER_ROUND]],
  }
