"""Grades shell commands with the static validator (parsed, never executed).

  python experiments/validate_commands.py --input=commands.jsonl --output=verdicts.jsonl

Each input line is {"tool", "task", "command"} with optional "intent_options" (a list of
alternatives, each a list of options that must all appear) and "values" (role -> value);
each output line, in the same order, is {"ok", "quality", "reasons"}. `-` = stdin/stdout.
"""

import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.quality import validator  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('input', '-', 'JSONL of {tool, task, command[, intent_options, values]}.')
flags.DEFINE_string('output', '-', 'JSONL of {ok, quality, reasons}, one per input line.')
flags.DEFINE_bool('details', False, 'Also write the human-readable details of each verdict.')


def parse_line(number: int, line: str) -> dict:
  """One input record; anything malformed is a UserError naming the line."""
  try:
    item = json.loads(line)
  except ValueError as error:
    raise UserError(f'line {number}: not valid JSON ({error.msg})') from None
  if not isinstance(item, dict):
    raise UserError(f'line {number}: expected a JSON object with tool, task and command')
  for field in ('tool', 'task', 'command'):
    if not isinstance(item.get(field), str):
      raise UserError(f'line {number}: field {field!r} must be a string')
  options = item.get('intent_options')
  if options is not None and not (isinstance(options, list) and all(
      isinstance(alt, list) and all(isinstance(o, str) for o in alt) for alt in options)):
    raise UserError(f'line {number}: intent_options must be a list of lists of option strings')
  values = item.get('values')
  if values is not None and not isinstance(values, dict):
    raise UserError(f'line {number}: values must be an object of role -> value')
  return item


def validate_lines(lines, details: bool = False):
  """Yields one output dict per non-empty input line."""
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    item = parse_line(number, line)
    try:
      verdict = validator.validate(item['tool'], item['task'], item['command'],
                                   intent_options=item.get('intent_options'),
                                   values=item.get('values'))
    except UserError as error:
      raise UserError(f'line {number}: {error}') from None
    yield verdict.to_json() | ({'details': verdict.details} if details else {})


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; use --input and --output')
  try:
    source = (io.TextIOWrapper(sys.stdin.buffer, encoding='utf-8') if FLAGS.input == '-'
              else open(FLAGS.input, encoding='utf-8'))
  except OSError as error:
    raise UserError(f'cannot read --input={FLAGS.input} ({error.strerror})') from None
  with source:
    try:
      results = [json.dumps(r) for r in validate_lines(source, FLAGS.details)]
    except UnicodeDecodeError as error:
      raise UserError(f'--input={FLAGS.input} is not UTF-8 text ({error.reason} at byte '
                      f'{error.start} of a read block); convert it to UTF-8') from None
  text = ''.join(r + '\n' for r in results)
  if FLAGS.output == '-':
    sys.stdout.write(text)
  else:
    try:
      with open(FLAGS.output, 'w') as sink:
        sink.write(text)
    except OSError as error:
      raise UserError(f'cannot write --output={FLAGS.output} ({error.strerror})') from None


if __name__ == '__main__':
  app.run(main)
