"""Files a run writes, replaced atomically (temp file, fsync, rename) so a crash never leaves
a half-written file behind; their reading with one-line errors; every phase's rows as JSON
lines."""

import dataclasses
import errno
import json
import math
import os
from pathlib import Path
import tempfile

import numpy as np

from inversion_jax.errors import OutputError, UserError


def jsonable(obj):
  """Converts numpy, JAX, dataclasses, tuples and paths to plain JSON values.

  Non-finite floats become None: JSON has no NaN, and a NaN loss means "no value".
  """
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return jsonable(dataclasses.asdict(obj))
  if isinstance(obj, dict):
    return {str(key): jsonable(value) for key, value in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(value) for value in obj]
  if isinstance(obj, Path):
    return str(obj)
  if hasattr(obj, '__array__') and not isinstance(obj, (str, bytes)):
    array = np.asarray(obj)
    return jsonable(array.item() if array.ndim == 0 else array.tolist())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def write_text_atomic(path: str | Path, text: str) -> Path:
  """Writes `text` to `path` so readers see the old or the new file, never half.

  The file gets the mode a plain `open` would give (0666 less the umask; mkstemp's 0600
  would hide results from a group). A failed write (full disk, no permission) is a
  `UserError` naming the file; the old file, if any, is untouched.
  """
  path = Path(path).expanduser()
  tmp_name = None
  try:
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    with os.fdopen(fd, 'w') as tmp:
      tmp.write(text)
      tmp.flush()
      os.fchmod(tmp.fileno(), 0o666 & ~current_umask())
      os.fsync(tmp.fileno())
    os.replace(tmp_name, path)
  except OSError as error:
    raise write_error(path, error) from error
  finally:
    if tmp_name is not None and Path(tmp_name).exists():
      Path(tmp_name).unlink(missing_ok=True)
  return path


def current_umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_error(path: str | Path, error: OSError) -> OutputError:
  """The one line for a file that could not be written, with what to do."""
  if error.errno == errno.ENOSPC or error.errno == errno.EDQUOT:
    advice = 'the disk is full: free space'
  elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    advice = 'no permission: choose a writable directory'
  elif error.errno in (errno.ENOENT, errno.ENOTDIR):
    advice = 'no file can be made there: check that its directory exists, or choose another path'
  else:
    advice = 'check the path and the disk'
  return OutputError(f'cannot write {path} ({error.strerror or error}); {advice}')


def read_json(path: str | Path, advice: str, kind: type = dict):
  """A JSON file's value, or a `UserError` naming the file and `advice` when it is missing,
  unreadable, not JSON, or not a `kind` (a file cut short or edited by hand)."""
  path = Path(path)
  try:
    value = json.loads(path.read_bytes())
  except FileNotFoundError as error:
    raise UserError(f'{path} does not exist; {advice}') from error
  except OSError as error:
    raise UserError(f'cannot read {path} ({error.strerror or error}); {advice}') from error
  except ValueError as error:  # JSONDecodeError and UnicodeDecodeError.
    raise UserError(f'{path} is not valid JSON ({error}); {advice}') from error
  if not isinstance(value, kind):
    raise UserError(f'{path} holds a JSON {type(value).__name__}, not the expected '
                    f'{kind.__name__}; {advice}')
  return value


def check_output_file(path: str | Path) -> Path:
  """Refuses an output file that could not be written, before any work is done: its
  directory must exist and be writable, and the path must not be a directory."""
  path = Path(path).expanduser()
  parent = path.parent
  if path.is_dir():
    raise UserError(f'output {path} is a directory; give a file path')
  if not parent.is_dir():
    raise UserError(f'cannot write {path}: the directory {parent} does not exist; create it '
                    'or choose another path')
  try:  # A real write: access() says yes to root, and on /proc or a read-only mount.
    with tempfile.TemporaryFile(prefix=f'.{path.name}.', dir=parent):
      pass
  except OSError as error:
    raise write_error(path, error) from None
  return path


def write_json_atomic(path: str | Path, obj) -> Path:
  """`obj` as indented JSON, atomically."""
  return write_text_atomic(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + '\n')


ROWS_SUBDIR = 'rows'


def save_figure_atomic(fig, path: str | Path, dpi: int) -> Path:
  """Saves a matplotlib figure and closes it; readers see the old plot or the new one."""
  from matplotlib import pyplot as plt  # Local: only plotting callers pay for matplotlib.
  path = Path(path)
  tmp = path.with_name(f'.{path.name}.tmp{path.suffix}')
  try:
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)
  except OSError as error:
    tmp.unlink(missing_ok=True)
    raise write_error(path, error) from None
  finally:
    plt.close(fig)
  return path


def rows_path(directory: str | Path, round_index: int, phase: str) -> Path:
  return Path(directory) / ROWS_SUBDIR / f'round_{round_index:03d}_{phase}.jsonl'


def write_rows(directory: str | Path, round_index: int, phase: str, rows) -> Path:
  """Every row of one phase as JSON lines, replaced atomically (a redone round overwrites)."""
  path = rows_path(directory, round_index, phase)
  path.parent.mkdir(parents=True, exist_ok=True)
  return write_text_atomic(path, ''.join(json.dumps(jsonable(row), allow_nan=False) + '\n'
                                         for row in rows))


def read_rows(path: str | Path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
