"""Faithfulness tests for the text side of the intrinsic score.

Expected values are worked out by hand from the original's definitions, not by calling
the implementation.
"""

import math

import numpy as np
import pytest

from inversion_jax.errors import UserError
from inversion_jax.scoring import text


@pytest.mark.parametrize('original, reconstruction, expected', [
    # {scan, 10.0.0.5, for, open, ports} vs {scan, ports, on, 10.0.0.5}: 3 of 5.
    ('Scan 10.0.0.5 for open ports', 'scan ports on 10.0.0.5', 3 / 5),
    # Sets: 'scan' counts once, so 1 of {scan, host} (a list-based count would give 2/3).
    ('scan scan host', 'scan', 1 / 2),
    ('Nmap SCAN', 'nmap scan', 1.0),
    ('host,', 'host', 0.0),  # Punctuation stays attached to the token.
    ('a b c d', 'd c', 2 / 4),
    ('', 'anything', 0.0),
    ('  ', 'anything', 0.0),
])
def test_token_overlap_matches_the_original(original, reconstruction, expected):
  assert text.token_overlap(original, reconstruction) == pytest.approx(expected)


@pytest.mark.parametrize('a, b, expected', [
    ('abcd', 'bcde', 2 * 3 / 8),  # One matching block 'bcd': 2 * M / T.
    ('ABCD', 'bcde', 2 * 3 / 8),  # Lower-cased first.
    ('scan', 'SCAN', 1.0),
    ('abc', 'xyz', 0.0),
    ('ab', 'abab', 2 * 2 / 6),
    ('', '', 1.0),  # difflib's convention for two empty strings.
])
def test_sequence_ratio_matches_difflib_lowercased(a, b, expected):
  assert text.sequence_ratio(a, b) == pytest.approx(expected)


@pytest.mark.parametrize('reply, expected', [
    ('7', 0.7), ('Rating: 8/10', 0.8), ('15', 1.0), ('none', 0.5), ('7.5', 0.75),
    (' 10', 1.0), ('0', 0.0), ('', 0.5), ('The similarity is 6 out of 10', 0.6),
    ('-3', 0.3),  # The original's pattern has no sign.
    ('9.', 0.9), ('8\n2', 0.8),
])
def test_parse_rating_follows_the_original(reply, expected):
  assert text.parse_rating(reply) == pytest.approx(expected)


@pytest.mark.parametrize('raw, expected', [
    (' nmap -sV 10.0.0.5\n', 'nmap -sV 10.0.0.5'),
    ('\n\n  nmap -p 22 10.0.0.5\nThis scans port 22.', 'nmap -p 22 10.0.0.5'),
    ('`nmap -A 10.0.0.5`', 'nmap -A 10.0.0.5'),
    ('```nmap -A 10.0.0.5```', 'nmap -A 10.0.0.5'),
    ('```bash\nnmap -sV 10.0.0.5\n```', 'nmap -sV 10.0.0.5'),
    ('```\n\nnikto -h http://x\n```', 'nikto -h http://x'),
    ('```bash\n```', ''),
    ('"nmap -O 10.0.0.5"', 'nmap -O 10.0.0.5'),
    ("'nmap -O 10.0.0.5'", 'nmap -O 10.0.0.5'),
    ('sqlmap -u "http://x/?id=1"', 'sqlmap -u "http://x/?id=1"'),  # Inner quotes stay.
    ('"nmap -O x\'', '"nmap -O x\''),  # Quotes must match to be stripped.
    ('', ''),
])
def test_clean_command(raw, expected):
  assert text.clean_command(raw) == expected


def test_clean_reconstruction_keeps_first_line_trimmed():
  assert text.clean_reconstruction('\n  scan the host for ports \nand more') == (
      'scan the host for ports')
  assert text.clean_reconstruction('') == ''


def test_combine_uses_the_original_weights():
  assert text.combine(0.6, 0.75, 0.7) == pytest.approx(0.2 * 0.6 + 0.3 * 0.75 + 0.5 * 0.7)
  assert text.combine(0.6, 0.75, 0.7) == pytest.approx(0.695)
  assert text.combine(1.0, 0.0, 0.0, weights=(1.0, 0.0, 0.0)) == 1.0


def test_intrinsic_scores_end_to_end_by_hand():
  # Row 1: tokens {abcd} vs {bcde}: 0; ratio 0.75; rating '7' -> 0.7.
  #   0.2 * 0 + 0.3 * 0.75 + 0.5 * 0.7 = 0.575
  # Row 2: identical texts: overlap 1, ratio 1; no number -> 0.5.
  #   0.2 + 0.3 + 0.25 = 0.75
  scores = text.intrinsic_scores(['ABCD', 'scan x'], ['bcde', 'Scan X'], ['7', 'similar'])
  np.testing.assert_allclose(scores, [0.575, 0.75])


def test_vectorized_helpers_equal_scalar_functions():
  originals = ['Scan 10.0.0.5 for open ports', 'Find exploits for vsftpd 2.3.4', '']
  recons = ['scan ports of 10.0.0.5', 'search exploits vsftpd', 'x']
  overlap, ratio = text.text_parts(originals, recons)
  assert overlap.tolist() == [text.token_overlap(a, b) for a, b in zip(originals, recons)]
  assert ratio.tolist() == [text.sequence_ratio(a, b) for a, b in zip(originals, recons)]
  assert text.parse_ratings(['3', 'x']).tolist() == [0.3, 0.5]
  with pytest.raises(ValueError):
    text.text_parts(['a'], [])


@pytest.mark.parametrize('weights', [(-0.1, 0.6, 0.5), (0.2, 0.3, 0.6), (math.nan, 0.5, 0.5),
                                     (0.5, 0.5)])
def test_bad_weights_are_user_errors(weights):
  with pytest.raises(UserError, match='weights'):
    text.combine(0.5, 0.5, 0.5, weights=weights)


def test_score_weights_defaults_are_the_original():
  weights = text.ScoreWeights()
  assert (weights.overlap, weights.sequence, weights.judge) == (0.2, 0.3, 0.5)
  assert text.ScoreWeights(0.0, 0.0, 1.0).judge == 1.0
