"""The original's text side of the intrinsic score, as pure functions.

score = 0.2 * token_overlap + 0.3 * sequence_ratio + 0.5 * judge, where judge is the
model's own 0-10 rating parsed by `parse_rating`. Definitions follow the original
(`IntrinsicScorer.compute_similarity` / `_llm_similarity`):

- token_overlap uses SETS of lower-cased whitespace tokens, |orig & rec| / |orig|: a word
  repeated in the task counts once, and punctuation stays attached ("10.0.0.5," differs
  from "10.0.0.5"). 0 when the task has no tokens.
- sequence_ratio is difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() with the
  default autojunk, as in the original.
- parse_rating takes the first unsigned number (int or decimal), divides by 10 and caps at
  1; no number gives 0.5. A minus sign is ignored ("-3" -> 0.3), as in the original.

One deliberate deviation in `clean_command`: a leading Markdown fence line (```bash) is
skipped so the command inside it is kept; the original would keep the word "bash".
"""

from collections.abc import Sequence
import dataclasses
import difflib
import math
import re

import numpy as np

from inversion_jax.errors import UserError

_NUMBER = re.compile(r'(\d+(?:\.\d+)?)')
_FENCE = re.compile(r'^```[\w+.-]*$')
_QUOTES = ('"', "'")


def _first_line(raw: str) -> str:
  return raw.strip().split('\n')[0].strip()


def clean_command(raw: str) -> str:
  """First line of a generation, without backticks or one pair of surrounding quotes."""
  lines = raw.strip().split('\n')
  if _FENCE.match(lines[0].strip()):
    lines = [line for line in lines[1:] if line.strip()] or ['']
  command = lines[0].strip().replace('`', '').strip()
  if len(command) >= 2 and command[0] == command[-1] and command[0] in _QUOTES:
    command = command[1:-1].strip()
  return command


def clean_command_original(raw: str) -> str:
  """The original's cleaning, verbatim (`--command_cleaning=original`): first line, no
  backticks, one pair of surrounding double quotes removed; a fence line stays."""
  command = raw.strip().split('\n')[0].strip()
  command = command.replace('`', '').strip()
  if command.startswith('"') and command.endswith('"'):
    command = command[1:-1]
  return command


CLEANERS = {'ours': clean_command, 'original': clean_command_original}


def clean_reconstruction(raw: str) -> str:
  """First line of a reconstruction, trimmed."""
  return _first_line(raw)


def token_overlap(original: str, reconstruction: str) -> float:
  """Fraction of the original's distinct lower-cased tokens found in the reconstruction."""
  original_tokens = set(original.lower().split())
  if not original_tokens:
    return 0.0
  return len(original_tokens & set(reconstruction.lower().split())) / len(original_tokens)


def sequence_ratio(a: str, b: str) -> float:
  """difflib's similarity ratio of the lower-cased texts."""
  return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def parse_rating(text: str) -> float:
  """The judge's first number / 10, capped at 1; 0.5 when the text has no number."""
  match = _NUMBER.search(text)
  if match is None:
    return 0.5
  return min(float(match.group(1)) / 10.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ScoreWeights:
  """Weights of the three parts; they must be >= 0 and sum to 1 so scores stay in [0, 1]."""

  overlap: float = 0.2
  sequence: float = 0.3
  judge: float = 0.5

  def __post_init__(self):
    values = (self.overlap, self.sequence, self.judge)
    if any(not math.isfinite(v) or v < 0 for v in values):
      raise UserError(f'score weights must be finite and >= 0, got {values}')
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
      raise UserError(
          f'score weights must sum to 1 so the threshold keeps its meaning, got {values} '
          f'(sum {sum(values):g})')


def _as_weights(weights: 'ScoreWeights | Sequence[float]') -> ScoreWeights:
  if isinstance(weights, ScoreWeights):
    return weights
  if len(weights) != 3:
    raise UserError(f'give three score weights (overlap, sequence, judge), got {weights}')
  return ScoreWeights(*(float(w) for w in weights))


def combine(overlap, ratio, judge, weights: 'ScoreWeights | Sequence[float]' = ScoreWeights()):
  """Weighted sum of the parts; works on floats and on numpy arrays alike."""
  w = _as_weights(weights)
  # Same operation order as the original, so faithful scores match it bit for bit.
  return w.overlap * overlap + w.sequence * ratio + w.judge * judge


def text_parts(originals: Sequence[str],
               reconstructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Token overlap and sequence ratio for each (original, reconstruction) pair."""
  if len(originals) != len(reconstructions):
    raise ValueError(f'{len(originals)} originals but {len(reconstructions)} reconstructions')
  pairs = list(zip(originals, reconstructions))
  overlap = np.array([token_overlap(a, b) for a, b in pairs], dtype=np.float64)
  ratio = np.array([sequence_ratio(a, b) for a, b in pairs], dtype=np.float64)
  return overlap, ratio


def parse_ratings(texts: Sequence[str]) -> np.ndarray:
  return np.array([parse_rating(t) for t in texts], dtype=np.float64)


def intrinsic_scores(originals: Sequence[str], reconstructions: Sequence[str],
                     rating_texts: Sequence[str],
                     weights: 'ScoreWeights | Sequence[float]' = ScoreWeights()) -> np.ndarray:
  """The original's score for each row, from texts and the judge's raw replies."""
  overlap, ratio = text_parts(originals, reconstructions)
  judge = parse_ratings(rating_texts)
  if len(judge) != len(overlap):
    raise ValueError(f'{len(judge)} ratings for {len(overlap)} pairs')
  return combine(overlap, ratio, judge, weights)
