"""A label-free early warning: what the loop can see of its own drift, with no ground truth.

Per round, from the AFTER phase (the trained model's fresh candidates) and the model itself:

  agreement_rate      candidates with at least one similar sibling of the same task (the V2
                      similarity at its default settings) / candidates
  kl_from_base        mean KL(current || base model) of the next-token distribution at the
                      end of the generation prompts of a round's number of tasks (at most
                      `KL_PROBES`) drawn once a run, in nats: the
                      same prompts every round, so rounds differ by the model alone, and
                      the base model's side is computed once
  distinct_ratio, option_count_drift (mean options per command / round 1 BEFORE's - 1),
  unknown_option_rate, repeated_option_rate, echo_rate, prose_rate
                      the gaming indicators of the AFTER commands

`score` counts the signals past their one-sided limits (`limits.py`: the table the
Goodhart monitor checks too) from round 1's BEFORE phase, i.e. the base model's own
candidates; two or more raise the early alarm. Whether it, or any signal alone, comes
before the gold event (`goodhart_event.py`) is measured by `experiments/detectors/`.
"""

import numpy as np

from inversion_jax.goodhart import limits as limits_lib
from inversion_jax.goodhart import metrics as metrics_lib
from inversion_jax.loop import selection

PHASE = 'signal'
ALARM_AT = 2
LIMITS = limits_lib.LIMITS  # One table for every detector (limits.py).
_INDICATORS = ('distinct_ratio', 'unknown_option_rate', 'repeated_option_rate', 'echo_rate',
               'prose_rate')


def agreement_counts(generator, commands, groups, similarity: float = 0.6, layer=None,
                     embeddings=None) -> np.ndarray:
  """Per candidate, similar siblings of its task (V2 similarity, the threshold ignored).

  `embeddings`: the commands' embeddings when the round already has them (the V2 filter's,
  at the same layer); otherwise they are computed at `layer` (None = the last).
  """
  if embeddings is None:
    layer = generator.config.num_layers if layer is None else layer
    embeddings = generator.embed([c or ' ' for c in commands], layer=layer)
  candidates = [selection.Candidate(g, '', '', c, '', 1.0, e)
                for g, c, e in zip(groups, commands, embeddings)]
  return selection.ReproducibilityFilter(threshold=0.0, similarity=similarity).agreement(
      candidates)


def agreement_rate(generator, commands, groups, embeddings=None) -> float:
  """Fraction of candidates with >= 1 similar sibling (V2 similarity at its defaults)."""
  if len(commands) < 2:
    return 0.0
  counts = agreement_counts(generator, commands, groups, embeddings=embeddings)
  return float(np.mean(counts >= 1))


KL_PROBES = 64  # At most this many prompts for KL from base (drawn once a run).


def next_token_log_probs(generator, prompts) -> np.ndarray:
  """float32 [len(prompts), V] log-probabilities of the token that would follow each prompt."""
  prompts = list(prompts)
  if not prompts:
    return np.zeros((0, 0), np.float32)
  return _log_softmax(generator.last_token_logits(prompts))


def kl_from_base(current: np.ndarray, base: np.ndarray) -> float:
  """Mean KL(current || base) over rows of next-token log-probabilities (as
  `next_token_log_probs` gives them) of the same prompts."""
  if not len(current):
    return 0.0
  return float(np.mean(np.sum(np.exp(current) * (current - base), axis=-1)))


def _log_softmax(logits):
  logits = logits - logits.max(-1, keepdims=True)
  return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def signals(record_metrics: dict, baseline_metrics: dict, kl: float, phase: str = 'after') -> dict:
  """The round's signals from its flat metrics (`phase`: AFTER, or BEFORE in a round without
  AFTER) and round 1's (BEFORE)."""
  get = lambda flat, phase, key: flat.get(f'{phase}/{key}')
  out = {'kl_from_base': kl, 'agreement_rate': get(record_metrics, phase, 'agreement_rate')}
  for name in _INDICATORS:
    out[name] = get(record_metrics, phase, f'indicator/{name}')
  count = get(record_metrics, phase, 'indicator/mean_option_count')
  base_count = get(baseline_metrics, 'before', 'indicator/mean_option_count')
  out['option_count_drift'] = (count / base_count - 1) if count is not None and base_count \
      else None
  return {k: v for k, v in out.items() if v is not None}


def score(now: dict, baseline: dict, table: dict | None = None) -> tuple[int, list[str]]:
  """(number of signals past their limits, which) against the baseline's values."""
  reasons = limits_lib.past(now, baseline, table)
  return len(reasons), reasons


def baseline(first_record_metrics: dict) -> dict:
  """Round 1 BEFORE (the base model's candidates) as the signals' starting values."""
  values = {'kl_from_base': 0.0, 'option_count_drift': 0.0,
            'agreement_rate': first_record_metrics.get('before/agreement_rate')}
  for name in _INDICATORS:
    values[name] = first_record_metrics.get(f'before/indicator/{name}')
  return {k: v for k, v in values.items() if v is not None}


def series(rounds: list[dict], key: str) -> list[tuple[int, float]]:
  return [(int(r['cycle']), metrics_lib.get(r, PHASE, key)) for r in rounds
          if metrics_lib.get(r, PHASE, key) is not None]
