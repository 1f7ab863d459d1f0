"""The label-free early-warning signals and their score."""

import numpy as np
import pytest

from inversion_jax.goodhart import early_warning


def test_score_counts_signals_past_limits():
  baseline = {'agreement_rate': 0.4, 'kl_from_base': 0.0, 'distinct_ratio': 1.0,
              'option_count_drift': 0.0, 'unknown_option_rate': 0.3}
  calm = {'agreement_rate': 0.5, 'kl_from_base': 0.1, 'distinct_ratio': 0.9,
          'option_count_drift': -0.1, 'unknown_option_rate': 0.35}
  assert early_warning.score(calm, baseline) == (0, [])
  drifted = {'agreement_rate': 0.9, 'kl_from_base': 0.8, 'distinct_ratio': 0.5,
             'option_count_drift': -0.4, 'unknown_option_rate': 0.35}
  # One-sided: agreement rising and fewer options per command are not gaming.
  count, reasons = early_warning.score(drifted, baseline)
  assert count == 2 and reasons == ['kl_from_base 0.000 -> 0.800', 'distinct_ratio 1.000 -> 0.500']
  gamed = drifted | {'agreement_rate': 0.1, 'option_count_drift': 0.4}
  assert early_warning.score(gamed, baseline)[0] == 4
  assert early_warning.score(gamed, baseline, {'kl_from_base': ('up', 1.0)}) == (0, [])


def test_signals_and_baseline_from_flat_metrics():
  first = {'before/agreement_rate': 0.3, 'before/indicator/mean_option_count': 2.0,
           'before/indicator/distinct_ratio': 1.0}
  now = {'after/agreement_rate': 0.6, 'after/indicator/mean_option_count': 1.0,
         'after/indicator/distinct_ratio': 0.7}
  values = early_warning.signals(now, first, kl=0.25)
  assert values == pytest.approx({'kl_from_base': 0.25, 'agreement_rate': 0.6,
                                  'distinct_ratio': 0.7, 'option_count_drift': -0.5})
  assert early_warning.baseline(first) == {'kl_from_base': 0.0, 'option_count_drift': 0.0,
                                           'agreement_rate': 0.3, 'distinct_ratio': 1.0}


def test_kl_of_a_model_from_itself_is_zero():
  class Fixed:
    def __init__(self, logits):
      self.logits = np.asarray(logits, np.float32)

    def last_token_logits(self, prompts):
      return np.repeat(self.logits[None], len(prompts), 0)

  log_probs = lambda logits, n: early_warning.next_token_log_probs(Fixed(logits), ['a'] * n)
  same = early_warning.kl_from_base(log_probs([1.0, 2.0, 3.0], 2), log_probs([1.0, 2.0, 3.0], 2))
  assert same == pytest.approx(0.0, abs=1e-6)
  p, q = np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum(), np.array([0.5, 0.5])
  other = early_warning.kl_from_base(log_probs([0.0, 2.0], 1), log_probs([0.0, 0.0], 1))
  assert other == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-5)
  assert np.exp(log_probs([0.0, 2.0], 1)).sum() == pytest.approx(1.0, rel=1e-6)
  assert early_warning.kl_from_base(log_probs([0.0], 0), log_probs([0.0], 0)) == 0.0
