"""The files of one run (`<output>/<name>/`), owned in one place and written by process 0.

In a multi-process run every process computes the same rounds; only process 0 prints,
writes rows, progress, results and the report (`RunDir.is_main`). Checkpoints go through
Orbax, which every process calls and which coordinates the writes itself; the run
configuration is written when round 1 commits (`checkpointing.RoundCheckpointer`).
"""

import pathlib

from inversion_jax import history as history_lib
from inversion_jax import report as report_lib
from inversion_jax.parallel import distributed


class RunDir:
  """Paths and writes of one run directory; a no-op writer on processes other than 0."""

  def __init__(self, path: str | pathlib.Path, is_main: bool | None = None):
    self.path = pathlib.Path(path)
    self.is_main = distributed.is_main() if is_main is None else is_main

  def say(self, text: str) -> None:
    if self.is_main:
      print(text, flush=True)

  def write_rows(self, round_index: int, phase: str, rows) -> None:
    if self.is_main:
      history_lib.write_rows(self.path, round_index, phase, rows)

  def save_progress(self, history: history_lib.RunHistory) -> None:
    if self.is_main:
      history.save_progress(self.path)

  def save_results(self, history: history_lib.RunHistory) -> None:
    if self.is_main:
      history.save_results(self.path)

  def write_report(self) -> None:
    if self.is_main:
      report_lib.write(self.path)
