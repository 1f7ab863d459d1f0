"""The files of one run (`<output>/<name>/`), owned in one place and written by process 0.

In a multi-process run every process computes the same rounds; only process 0 prints,
writes rows, progress, results and the report (`RunDir.is_main`). Checkpoints go through
Orbax, which every process calls and which coordinates the writes itself; the run
configuration is written when round 1 commits (`checkpointing.RoundCheckpointer`).
TensorBoard event files (summaries.py) go into the run directory itself.
configuration is written before round 1 and rides in every checkpoint
(`checkpointing.RoundCheckpointer`).

One writer per run directory: `lock` takes an exclusive `flock` on `<run>/.lock` for the
run's life (the OS drops it when the process dies, so a kill never leaves a stale lock);
a second run on the same directory is refused with the holder's pid before it writes.
"""

import contextlib
import errno
import fcntl
import os
import pathlib

from inversion_jax.errors import UserError
from inversion_jax.parallel import distributed
from inversion_jax.records import files as files_lib
from inversion_jax.records import history as history_lib
from inversion_jax.records import report as report_lib
from inversion_jax.records import summaries as summaries_lib


LOCK_FILE = '.lock'


class RunLock:
  """An exclusive lock on a run directory, held until `release` (or the process's death)."""

  def __init__(self, directory: str | pathlib.Path, what: str = 'a run'):
    self.directory = pathlib.Path(directory)
    self.path = self.directory / LOCK_FILE
    self._fd = None
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
      raise UserError(f'cannot write the output directory {self.directory} '
                      f'({error.strerror or error}); choose a writable --output') from error
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      holder = os.read(fd, 64).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
        raise UserError(
            f'{self.directory} is in use by another process (pid {holder}); wait for it to '
            f'finish, or give {what} another --name or --output') from None
      raise files_lib.write_error(self.path, error) from error
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode())
    self._fd = fd

  def release(self):
    if self._fd is not None:
      os.close(self._fd)  # Closing the descriptor drops the flock.
      self._fd = None

  def __enter__(self):
    return self

  def __exit__(self, *unused_exc):
    self.release()


def check_unlocked(directory: str | pathlib.Path) -> None:
  """Refuses early (before a model loads) when a run holds `directory`; creates nothing."""
  path = pathlib.Path(directory) / LOCK_FILE
  if path.exists():
    RunLock(directory).release()


class RunDir:
  """Paths and writes of one run directory; a no-op writer on processes other than 0."""

  def __init__(self, path: str | pathlib.Path, is_main: bool | None = None,
               tensorboard: bool = True):
    self.path = pathlib.Path(path)
    self.is_main = distributed.is_main() if is_main is None else is_main
    self._tensorboard = tensorboard and self.is_main
    self._summaries = None  # Opened by log_config, once the run directory exists.

  def log_config(self, config: dict) -> None:
    if self._tensorboard:
      self._summaries = self._summaries or summaries_lib.RunSummaries(self.path)
      self._summaries.write_config(config)

  def log_round(self, record: dict) -> None:
    if self._summaries is not None:
      self._summaries.write_round(record)

  def close(self) -> None:
    if self._summaries is not None:
      self._summaries.close()
      self._summaries = None

  def lock(self, what: str = 'a run'):
    """The run directory's lock on process 0; nothing on the others (they do not write)."""
    return RunLock(self.path, what) if self.is_main else contextlib.nullcontext()

  def sweep_partial_files(self) -> None:
    """Removes the temp files of writes a kill interrupted (`files.write_text_atomic`'s
    `.<name>.*.tmp`); call it holding the lock, so no live write is among them."""
    if self.is_main:
      for folder in (self.path, self.path / files_lib.ROWS_SUBDIR,
                     self.path / report_lib.QUALITY_SUBDIR):
        for leftover in folder.glob('.*.tmp') if folder.is_dir() else ():
          leftover.unlink(missing_ok=True)

  def say(self, text: str) -> None:
    if self.is_main:
      print(text, flush=True)

  def write_rows(self, round_index: int, phase: str, rows) -> None:
    if self.is_main:
      files_lib.write_rows(self.path, round_index, phase, rows)

  def save_progress(self, history: history_lib.RunHistory) -> None:
    if self.is_main:
      history.save_progress(self.path)

  def save_results(self, history: history_lib.RunHistory) -> None:
    if self.is_main:
      history.save_results(self.path)

  def write_report(self) -> None:
    if self.is_main:
      report_lib.write(self.path)
