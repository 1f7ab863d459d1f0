"""The batched inversion scorer's own arithmetic: expected judge, score assembly."""

import numpy as np
import pytest

from inversion_jax.decode import prompts
from inversion_jax.decode.generation import Completions
from inversion_jax.errors import UserError
from inversion_jax.scoring import inversion
from inversion_jax.scoring import text as text_lib
from inversion_jax.tasks import bank as bank_lib


class DigitTokenizer:
  """Vocab: 0-9 are the digits '0'..'9' (10-12 are other text)."""

  def token_texts(self):
    return [str(d) for d in range(10)] + [' the', 'x', '\n']


class FakeGenerator:
  """Logits chosen by the test: log-probabilities of digits for the first and second pass."""

  def __init__(self, first, after_one, replies=()):
    self.tokenizer = DigitTokenizer()
    self.first, self.after_one, self.replies = first, after_one, list(replies)

  def last_token_logits(self, prompts_):
    first = prompts_[0]
    suffix = first[1] if isinstance(first, tuple) else first.suffix
    second = suffix.endswith(' 1')
    return np.log(np.tile(self.after_one if second else self.first, (len(prompts_), 1)))

  def generate(self, prompts_, sampling, seed=0, desc=''):
    texts = [self.replies.pop(0) for _ in prompts_]
    return Completions(texts, [3] * len(texts))


def probs(mass: dict[int, float]) -> np.ndarray:
  p = np.full(13, 1e-12)
  for token, value in mass.items():
    p[token] = value
  return p


def test_expected_rating_splits_one_into_one_and_ten():
  # First token: '7' w.p. 0.5, '1' w.p. 0.5; after '1': '0' w.p. 0.4 (so 10), else 1.
  gen = FakeGenerator(first=probs({7: 0.5, 1: 0.5}), after_one=probs({0: 0.4, 12: 0.6}))
  rating = prompts.get_style('fewshot').rating('a', 'b')
  value = inversion.expected_ratings(gen, [rating, rating])
  expected = (0.5 * 7 + 0.5 * 0.6 * 1 + 0.5 * 0.4 * 10) / 10
  np.testing.assert_allclose(value, [expected, expected], rtol=1e-6)


def test_non_digit_mass_is_renormalised_away():
  gen = FakeGenerator(first=probs({3: 0.1, 11: 0.9}), after_one=probs({12: 1.0}))
  rating = prompts.get_style('fewshot').rating('a', 'b')
  np.testing.assert_allclose(inversion.expected_ratings(gen, [rating]), [0.3], rtol=1e-6)


def test_tokenizer_without_digits_is_a_user_error():
  gen = FakeGenerator(probs({}), probs({}))
  gen.tokenizer.token_texts = lambda: ['a', 'b']
  with pytest.raises(UserError, match='--judge=sample'):
    inversion.digit_token_ids(gen.tokenizer)


def test_score_tasks_combines_the_original_parts():
  tasks = bank_lib.sample_tasks(bank_lib.default_bank(), 2, seed=1)
  replies = ['```bash\nnmap -sV 10.0.0.5\n```', "'gobuster dir'",  # commands
             tasks[0].text + '\nextra', 'something else',  # reconstructions
             'Rating: 8/10', 'none']  # judge replies
  gen = FakeGenerator(probs({}), probs({}), replies)
  out = inversion.score_tasks(gen, prompts.get_style('fewshot'), tasks, 1,
                              inversion.ScorerConfig(), seed=0)
  assert [r.command for r in out.rows] == ['nmap -sV 10.0.0.5', 'gobuster dir']
  assert out.rows[0].reconstruction == tasks[0].text
  assert [r.judge for r in out.rows] == [0.8, 0.5]
  # Row 0 reconstructs its task exactly: overlap 1, ratio 1, judge 0.8.
  assert out.rows[0].score == pytest.approx(0.2 + 0.3 + 0.5 * 0.8)
  expected = text_lib.combine(text_lib.token_overlap(tasks[1].text, 'something else'),
                              text_lib.sequence_ratio(tasks[1].text, 'something else'), 0.5)
  assert out.rows[1].score == pytest.approx(expected)
  assert out.tokens_generated == 18 and set(out.seconds) == {'generate', 'invert', 'rate'}
