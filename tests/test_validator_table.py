"""The validator against hand-labelled tables of bad and good commands.

`tests/data/bad_commands.jsonl`: {tool, task, command, reason, note}; `reason` is the one
clearest fault (per the tool's documentation, quoted in `note`), from `REASONS`.
`tests/data/good_commands.jsonl`: {tool, task, command, note}; fully correct commands in
various documented syntaxes that a faithful validator must accept.

A row is judged right when a bad command gets `ok=False` with its label among the reasons,
or a good command gets `ok=True`. `per_tool_accuracy` is also used by
`experiments/validator_accuracy.py`. The validator is never given intent_options or values
here: it reads the task text, as it does for model outputs on bank tasks.
"""

import collections
import importlib
import json
import pathlib

import pytest

DATA = pathlib.Path(__file__).resolve().parent / 'data'
TOOLS = ('nmap', 'nikto', 'gobuster', 'dirb', 'netcat', 'searchsploit', 'hydra', 'sqlmap',
         'masscan')
REASONS = ('not_a_command', 'wrong_tool', 'extra_command', 'unknown_option', 'missing_value',
           'duplicate_option', 'contradictory_options', 'missing_required', 'missing_target',
           'missing_value_of_task', 'wrong_value', 'intent_missing', 'echo_task', 'shell_syntax')


def load_table(name: str) -> list[dict]:
  path = DATA / name
  return [json.loads(line) for line in path.read_text(encoding='utf-8').splitlines() if line]


def bad_rows() -> list[dict]:
  return load_table('bad_commands.jsonl')


def good_rows() -> list[dict]:
  return load_table('good_commands.jsonl')


def import_validator():
  """The validator module, or None while it does not import."""
  try:
    return importlib.import_module('inversion_jax.quality.validator')
  except Exception:  # pylint: disable=broad-except
    return None


def judge(validator, row: dict) -> tuple[bool, object]:
  """(judged right, verdict) for one table row (bad rows have a `reason`)."""
  verdict = validator.validate(row['tool'], row['task'], row['command'])
  if 'reason' in row:
    return (not verdict.ok) and row['reason'] in verdict.reasons, verdict
  return verdict.ok, verdict


def per_tool_accuracy(validator=None) -> dict[str, dict[str, float]]:
  """tool -> {'bad', 'good', 'all'}: fraction of that tool's rows judged right (NaN if none)."""
  validator = validator or import_validator()
  if validator is None:
    raise RuntimeError('inversion_jax.quality.validator does not import')
  right = collections.defaultdict(lambda: collections.Counter())
  total = collections.defaultdict(lambda: collections.Counter())
  for kind, rows in (('bad', bad_rows()), ('good', good_rows())):
    for row in rows:
      ok, _ = judge(validator, row)
      for key in (kind, 'all'):
        total[row['tool']][key] += 1
        right[row['tool']][key] += ok
  return {tool: {key: (right[tool][key] / total[tool][key] if total[tool][key] else float('nan'))
                 for key in ('bad', 'good', 'all')} for tool in TOOLS}


# ---- The tables themselves (no validator needed). ----

def test_bad_table_shape():
  rows = bad_rows()
  assert len(rows) >= 80
  for row in rows:
    assert set(row) == {'tool', 'task', 'command', 'reason', 'note'}, row
    assert row['tool'] in TOOLS and row['reason'] in REASONS, row
    assert isinstance(row['command'], str) and row['task'] and row['note'], row
  by_reason = collections.Counter(r['reason'] for r in rows)
  assert all(by_reason[reason] >= 4 for reason in REASONS), by_reason
  by_tool = collections.Counter(r['tool'] for r in rows)
  assert all(by_tool[tool] >= 6 for tool in TOOLS), by_tool
  assert len({(r['tool'], r['task'], r['command']) for r in rows}) == len(rows)


def test_good_table_shape():
  rows = good_rows()
  assert len(rows) >= 30
  for row in rows:
    assert set(row) == {'tool', 'task', 'command', 'note'}, row
    assert row['tool'] in TOOLS and row['command'].strip() and row['note'], row
  assert {r['tool'] for r in rows} == set(TOOLS)


def test_tables_do_not_overlap():
  bad = {(r['tool'], r['task'], r['command']) for r in bad_rows()}
  assert not bad & {(r['tool'], r['task'], r['command']) for r in good_rows()}


# ---- The validator against the tables. ----

@pytest.fixture(scope='module')
def validator():
  module = import_validator()
  if module is None:
    pytest.skip('inversion_jax.quality.validator does not import yet')
  return module


def test_bad_commands_are_rejected_with_their_label(validator):
  wrong = []
  for row in bad_rows():
    right, verdict = judge(validator, row)
    if not right:
      wrong.append(f'{row["tool"]}: {row["command"]!r} want {row["reason"]}, '
                   f'got ok={verdict.ok} {verdict.reasons}')
  assert not wrong, f'{len(wrong)} bad commands misjudged:\n' + '\n'.join(wrong)


def test_good_commands_are_accepted(validator):
  wrong = []
  for row in good_rows():
    right, verdict = judge(validator, row)
    if not right:
      wrong.append(f'{row["tool"]}: {row["command"]!r} got {verdict.reasons}')
  assert not wrong, f'{len(wrong)} good commands rejected:\n' + '\n'.join(wrong)


def test_per_tool_accuracy_covers_every_tool(validator):
  accuracy = per_tool_accuracy(validator)
  assert set(accuracy) == set(TOOLS)
  for tool, scores in accuracy.items():
    assert all(0.0 <= scores[key] <= 1.0 for key in ('bad', 'good', 'all')), tool
  print('\n' + '\n'.join(f'{tool}: {s["all"]:.2f}' for tool, s in accuracy.items()))
