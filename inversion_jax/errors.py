"""User-facing errors: one clear line, non-zero exit, no traceback.

Library code raises `UserError` for mistakes a user can fix (bad flag, missing file,
unknown model, full disk). Command-line entry points wrap `main` with
`exit_on_user_error`, which prints the message on one line to stderr and exits with
status 2; Ctrl-C prints one line too (the run's own when it says where to resume) and
exits with 130, the shell's code for SIGINT.
"""

import functools
import sys

INTERRUPTED_EXIT = 130


class UserError(Exception):
  """A mistake the user can fix; its message says what is wrong and what to do."""


class OutputError(UserError):
  """A file could not be written (full disk, no permission); what was written before is kept."""


class Interrupted(UserError):
  """Ctrl-C, with what was kept and how to go on (e.g. the `--resume` command)."""


def one_line(text: str) -> str:
  return ' '.join(str(text).split())


def exit_on_user_error(main):
  """Wraps an absl `main`: a `UserError` becomes one stderr line and exit code 2, Ctrl-C
  one line and 130."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except Interrupted as error:
      sys.stderr.write(f'interrupted: {one_line(error)}\n')
      sys.exit(INTERRUPTED_EXIT)
    except KeyboardInterrupt:
      sys.stderr.write('interrupted\n')
      sys.exit(INTERRUPTED_EXIT)
    except UserError as error:
      sys.stderr.write(f'error: {one_line(error)}\n')
      sys.exit(2)

  return wrapped
