"""Per-round Orbax checkpoints and the guard that makes `--resume` safe.

One Orbax step per completed round (step = round index, 1-based), every step kept so
any round can be reloaded for later quality evaluation. A step holds the LoRA params,
the optimizer state, the raw RNG key data and a JSON `meta` record. Orbax writes each
step to a temporary directory and renames it when complete, so a crash mid-save leaves
earlier rounds intact; leftovers of such a crash are swept away when the run reopens.

What `--resume` needs is never behind a round's commit: `run_config.json` is written when
a fresh run opens (before any work) and the same configuration rides in every round's
`meta`, so a kill between a commit and any file leaves a resumable run.
"""

import contextlib
import json
import logging
import os
from pathlib import Path
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from inversion_jax.errors import OutputError, UserError
from inversion_jax.parallel import distributed
from inversion_jax.records import files as files_lib

RUN_CONFIG_FILE = 'run_config.json'
CHECKPOINT_SUBDIR = 'checkpoints'
INCOMPLETE_SUBDIR = 'incomplete_checkpoints'
# Orbax names an unfinished step '<step>.orbax-checkpoint-tmp-<time>' and writes this
# file into it just before the rename (both atomicity modes), so a step directory
# without it never finished.
_TMP_MARKER = '.orbax-checkpoint-tmp'
_COMMIT_FILE = 'commit_success.txt'

# Settings that may differ between the original run and its `--resume`: how often the
# held-out set is evaluated and whether AFTER runs (`after_every`) change what is measured, not what the loop does; `output` and
# `name`, so a moved or renamed run directory resumes. The held-out split and task count
# may not: the headline change and the Goodhart gap compare rounds graded on one task set.
RESUME_MAY_CHANGE = ('cycles', 'resume', 'output', 'name', 'eval_every', 'after_every')

_ITEMS = ('lora', 'opt_state', 'rng', 'meta')
META_RUN_CONFIG = 'run_config'  # The run's configuration inside each round's meta.


class RoundCheckpointer:
  """Saves and restores one checkpoint per completed round under `directory`."""

  def __init__(self, directory: str | Path, run_config: dict):
    self.directory = Path(directory)
    self._checkpoint_dir = self.directory / CHECKPOINT_SUBDIR
    self._run_config = run_config
    try:
      self._checkpoint_dir.mkdir(parents=True, exist_ok=True)
      if not os.access(self.directory, os.W_OK):
        raise PermissionError(f'{self.directory} is not writable')
    except OSError as error:
      raise UserError(
          f'cannot write the output directory {self.directory} ({error.strerror or error});'
          ' choose a writable --output') from error
    if distributed.is_main():  # Other processes of a multi-process run only read.
      self._sweep_unfinished_steps()
    _drop_closed_loop_errors()
    self._manager = ocp.CheckpointManager(
        self._checkpoint_dir.absolute(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None, enable_async_checkpointing=False, create=True),
        item_names=_ITEMS)

  def _sweep_unfinished_steps(self):
    """Removes Orbax temp dirs; moves aside step dirs lacking the commit marker."""
    for path in sorted(self._checkpoint_dir.iterdir()):
      if not path.is_dir():
        continue
      if _TMP_MARKER in path.name:
        logging.warning('Removing unfinished checkpoint %s (interrupted save).', path)
        shutil.rmtree(path)
      elif path.name.isdigit() and not (path / _COMMIT_FILE).exists():
        aside = self.directory / INCOMPLETE_SUBDIR / path.name
        logging.warning('Round %s checkpoint is incomplete: moving it to %s.', path.name,
                        aside)
        aside.parent.mkdir(exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)

  def close(self):
    """Closes the Orbax manager (idempotent): left open at exit, its event loop prints
    stray "Event loop is closed" tracebacks."""
    manager, self._manager = self._manager, None
    if manager is not None:
      try:
        manager.close()
      except Exception as error:  # pylint: disable=broad-except
        logging.warning('closing the checkpoint manager failed: %s', error)

  def __enter__(self):
    return self

  def __exit__(self, *unused_exc):
    self.close()

  def all_rounds(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_round(self) -> int | None:
    return self._manager.latest_step()

  def write_run_config(self):
    """Writes `run_config.json` for a run with no committed round (a fresh start, or a
    restart after a kill in round 1): before any work, so no commit precedes it."""
    if distributed.is_main():
      files_lib.write_json_atomic(self.directory / RUN_CONFIG_FILE, self._run_config)

  def save(self, round_index: int, lora, opt_state, rng, meta: dict):
    """Writes round `round_index` and returns once it is complete on disk.

    The run configuration goes into `meta` too, committed atomically with the round.
    """
    if round_index < 1:
      raise ValueError(f'round_index must be >= 1, got {round_index}')
    if round_index in self.all_rounds() or (self._checkpoint_dir / str(round_index)).exists():
      raise UserError(
          f'round {round_index} already has a checkpoint in {self._checkpoint_dir};'
          ' use --resume to continue this run or a new --output')
    args = ocp.args.Composite(  # As host NumPy: one writer, any number of processes.
        lora=ocp.args.StandardSave(_on_host(lora)),
        opt_state=ocp.args.StandardSave(_on_host(opt_state)),
        rng=ocp.args.StandardSave(_raw_key_data(rng)),
        meta=ocp.args.JsonSave(files_lib.jsonable(meta | {META_RUN_CONFIG: self._run_config})))
    try:
      with _quiet_orbax_errors():
        saved = self._manager.save(round_index, args=args)
        self._manager.wait_until_finished()
    except Exception as error:  # Orbax/TensorStore wrap OSError in many types.
      raise _save_error(self._checkpoint_dir / str(round_index), error) from error
    if not saved:
      raise RuntimeError(f'Orbax declined to save step {round_index}')
    if distributed.is_main() and not (self.directory / RUN_CONFIG_FILE).exists():
      files_lib.write_json_atomic(self.directory / RUN_CONFIG_FILE, self._run_config)  # A repair.

  def restore(self, round_index: int, lora_like, opt_state_like):
    """Returns `(lora, opt_state, rng, meta)` of a saved round, shaped like *_like."""
    restored = self._restore_items(round_index, ocp.args.Composite(
        lora=ocp.args.StandardRestore(_on_host(lora_like)),
        opt_state=ocp.args.StandardRestore(_on_host(opt_state_like)),
        rng=ocp.args.StandardRestore(),  # Key size depends on the PRNG impl.
        meta=ocp.args.JsonRestore()))
    rng = np.asarray(restored['rng'], np.uint32)
    meta = {k: v for k, v in restored['meta'].items() if k != META_RUN_CONFIG}
    return restored['lora'], restored['opt_state'], rng, meta

  def restore_adapters(self, round_index: int) -> dict:
    """Only the round's LoRA arrays, as saved (nested dicts of NumPy): exporting them
    (export.py) needs no model to shape them."""
    return self._restore_items(
        round_index, ocp.args.Composite(lora=ocp.args.StandardRestore()))['lora']

  def restore_meta(self, round_index: int) -> dict:
    """Only the round's JSON metadata: rebuilding the history reads no arrays."""
    return self._restore_items(round_index, ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def _restore_items(self, round_index: int, args):
    if round_index not in self.all_rounds():
      raise UserError(
          f'no checkpoint for round {round_index} in {self._checkpoint_dir}'
          f' (saved rounds: {self.all_rounds() or "none"})')
    try:
      restored = self._manager.restore(round_index, args=args)
      if 'rng' in restored:
        np.asarray(restored['rng'], np.uint32)  # Fails here too when the data is bad.
    except Exception as error:  # Orbax/TensorStore raise many types; all mean unreadable.
      cause = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
      raise UserError(
          f'the round {round_index} checkpoint in {self._checkpoint_dir / str(round_index)}'
          f' is corrupt or unreadable ({cause}); delete that round\'s directory to resume'
          ' from the round before, or start a fresh --output') from error
    return restored

  def stored_config(self) -> dict:
    """The configuration of the committed rounds: round 1's `meta` (written atomically with
    it), else `run_config.json` (checkpoints made before the config rode in `meta`).
    A missing or damaged `run_config.json` is rewritten from `meta`."""
    path = self.directory / RUN_CONFIG_FILE
    first = self.all_rounds()[0]
    stored = self.restore_meta(first).get(META_RUN_CONFIG)
    if isinstance(stored, dict):
      if distributed.is_main() and not _is_json_dict(path):
        files_lib.write_json_atomic(path, stored)
      return stored
    return files_lib.read_json(
        path, f'the run configuration of {self.directory}\'s rounds is lost; start a fresh '
        '--output (its checkpoints stay readable by evaluate_quality.py once the file is back)')

  def check_resume(self, run_config: dict, defaults: dict | None = None):
    """Raises `UserError` naming every setting that differs from the stored run.

    A setting the stored run predates counts as its value in `defaults` (the behaviour
    the run had before the setting existed).
    """
    if not self.all_rounds():
      self.write_run_config()  # Nothing committed: this run starts over with its own config.
      return
    stored = self.stored_config()
    current = json.loads(json.dumps(files_lib.jsonable(run_config)))  # Tuples -> lists, as stored.
    older = json.loads(json.dumps(files_lib.jsonable(defaults or {})))
    stored = {key: older[key] for key in current if key not in stored and key in older} | stored
    changes = [
        f'{key} {_show(stored, key)} -> {_show(current, key)}'
        for key in sorted(set(stored) | set(current))
        if key not in RESUME_MAY_CHANGE and stored.get(key) != current.get(key)
    ]
    if changes:
      raise UserError(
          '--resume on a run made with a different configuration: ' + ', '.join(changes)
          + '; use the same flags or a new --output')


def _on_host(tree):
  """NumPy copies: Orbax refuses process-local jax.Arrays in a multi-process run, and the
  adapters and optimizer state are small and the same on every process."""
  return jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, tree)


def _raw_key_data(rng) -> np.ndarray:
  """Accepts a typed JAX key or raw key data; stores raw uint32 key data."""
  if jax.dtypes.issubdtype(getattr(rng, 'dtype', None), jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return np.asarray(rng, np.uint32)


def _show(config: dict, key: str) -> str:
  if key not in config:
    return '(unset)'
  value = config[key]
  return value if isinstance(value, str) else json.dumps(value)


class _DropOrbaxErrors(logging.Filter):
  """Orbax's writer threads log a failed write (a full disk) with its traceback before the
  save raises; the save's own error says it in one line."""

  def filter(self, record):
    return not (record.levelno >= logging.ERROR and f'{os.sep}orbax{os.sep}' in record.pathname)


@contextlib.contextmanager
def _quiet_orbax_errors():
  drop = _DropOrbaxErrors()
  loggers = [logging.getLogger('absl'), logging.getLogger()]
  for logger in loggers:
    logger.addFilter(drop)
  try:
    yield
  finally:
    for logger in loggers:
      logger.removeFilter(drop)


def _drop_closed_loop_errors():
  """After a failed save or restore, TensorStore still completes the other writes' futures
  and their callbacks reach Orbax's already closed event loop: each prints an "Event loop
  is closed" traceback (~180 after a full disk), through the unraisable or the except hook.
  They say nothing the error does not, so a process that checkpoints drops them; every
  other exception still prints."""
  if getattr(sys.unraisablehook, 'drops_closed_loop', False):
    return
  previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

  def noise(error) -> bool:
    return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'

  def unraisable_hook(unraisable):
    if not noise(unraisable.exc_value):
      previous_unraisable(unraisable)

  def except_hook(kind, error, trace):
    if not noise(error):
      previous_except(kind, error, trace)

  unraisable_hook.drops_closed_loop = True
  sys.unraisablehook, sys.excepthook = unraisable_hook, except_hook


def _is_json_dict(path: Path) -> bool:
  try:
    return isinstance(json.loads(path.read_bytes()), dict)
  except (OSError, ValueError):
    return False


def _save_error(step_dir: Path, error: Exception) -> UserError:
  """One line for a failed save; a full disk is named as such (Orbax reports ENOSPC as
  TensorStore's RESOURCE_EXHAUSTED or as a bare OSError)."""
  cause = error
  while cause is not None and not isinstance(cause, OSError):
    cause = cause.__cause__ or cause.__context__
  if isinstance(cause, OSError):
    return files_lib.write_error(step_dir, cause)
  text = str(error)
  if 'RESOURCE_EXHAUSTED' in text or 'No space left' in text:
    return OutputError(f'cannot write {step_dir} (No space left on device); the disk is full: '
                       'free space')
  first = text.splitlines()[0][:200] if text else type(error).__name__
  return OutputError(f'cannot write {step_dir} ({first}); check the disk and the directory')
