"""The files of one run (`<output>/<name>/`), owned in one place and written by process 0.

In a multi-process run every process computes the same rounds; only process 0 prints,
writes rows, progress, results and the report (`RunDir.is_main`). Checkpoints go through
Orbax, which every process calls and which coordinates the writes itself; the run
configuration is written when round 1 commits (`checkpointing.RoundCheckpointer`).
TensorBoard event files (summaries.py) go into the run directory itself.
"""

import pathlib

from inversion_jax import history as history_lib
from inversion_jax import report as report_lib
from inversion_jax import summaries as summaries_lib
from inversion_jax.parallel import distributed


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
