"""Prints per-tool accuracy of the static validator on the hand-labelled command tables.

  python experiments/validator_accuracy.py [--misjudged]

Tables: tests/data/bad_commands.jsonl (a bad row is right when the verdict is not ok and its
labelled reason is among the verdict's reasons) and tests/data/good_commands.jsonl (right
when ok). Prints a markdown table; exits 0 whatever the accuracy.
"""

import importlib.util
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool('misjudged', False, 'Also list every misjudged row with its verdict.')


def _table_module():
  """tests/test_validator_table.py, which owns the tables and the judging rule."""
  path = os.path.join(ROOT, 'tests', 'test_validator_table.py')
  spec = importlib.util.spec_from_file_location('validator_table', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cell(value: float) -> str:
  return '-' if math.isnan(value) else f'{value:.2f}'


@exit_on_user_error
def main(argv):
  del argv
  table = _table_module()
  validator = table.import_validator()
  if validator is None:
    raise UserError('inversion_jax.quality.validator does not import; nothing to measure')
  accuracy = table.per_tool_accuracy(validator)
  bad, good = table.bad_rows(), table.good_rows()
  lines = ['| tool | bad rows | good rows | bad right | good right | all right |',
           '|---|---|---|---|---|---|']
  for tool in table.TOOLS:
    scores = accuracy[tool]
    lines.append(f'| {tool} | {sum(r["tool"] == tool for r in bad)} | '
                 f'{sum(r["tool"] == tool for r in good)} | {_cell(scores["bad"])} | '
                 f'{_cell(scores["good"])} | {_cell(scores["all"])} |')
  judged = [table.judge(validator, row) + (row,) for row in bad + good]
  overall = sum(right for right, _, _ in judged) / len(judged)
  lines.append(f'| **all** | {len(bad)} | {len(good)} | '
               f'{_cell(sum(r for r, _, row in judged if "reason" in row) / len(bad))} | '
               f'{_cell(sum(r for r, _, row in judged if "reason" not in row) / len(good))} | '
               f'{_cell(overall)} |')
  print('\n'.join(lines))
  if FLAGS.misjudged:
    print()
    for right, verdict, row in judged:
      if not right:
        want = row.get('reason', 'ok')
        print(f'- {row["tool"]}: `{row["command"]}` want {want}, got ok={verdict.ok} '
              f'{verdict.reasons}')


if __name__ == '__main__':
  app.run(main)
