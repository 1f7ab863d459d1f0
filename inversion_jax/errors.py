"""User-facing errors: one clear line, non-zero exit, no traceback.

Library code raises `UserError` for mistakes a user can fix (bad flag, missing file,
unknown model). Command-line entry points wrap `main` with `exit_on_user_error`, which
prints the message on one line to stderr and exits with status 2.
"""

import functools
import sys


class UserError(Exception):
  """A mistake the user can fix; its message says what is wrong and what to do."""


def exit_on_user_error(main):
  """Wraps an absl `main` so a `UserError` becomes one stderr line and exit code 2."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UserError as error:
      message = ' '.join(str(error).split())
      sys.stderr.write(f'error: {message}\n')
      sys.exit(2)

  return wrapped
