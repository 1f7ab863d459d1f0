"""Per-round Orbax checkpoints and the guard that makes `--resume` safe.

One Orbax step per completed round (step = round index, 1-based), every step kept so
any round can be reloaded for later quality evaluation. A step holds the LoRA params,
the optimizer state, the raw RNG key data and a JSON `meta` record. Orbax writes each
step to a temporary directory and renames it when complete, so a crash mid-save leaves
earlier rounds intact; leftovers of such a crash are swept away when the run reopens.
"""

import json
import logging
import os
from pathlib import Path
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp

from inversion_jax.errors import UserError
from inversion_jax.history import jsonable
from inversion_jax.history import write_json_atomic
from inversion_jax.parallel import distributed

RUN_CONFIG_FILE = 'run_config.json'
CHECKPOINT_SUBDIR = 'checkpoints'
INCOMPLETE_SUBDIR = 'incomplete_checkpoints'
# Orbax names an unfinished step '<step>.orbax-checkpoint-tmp-<time>' and writes this
# file into it just before the rename (both atomicity modes), so a step directory
# without it never finished.
_TMP_MARKER = '.orbax-checkpoint-tmp'
_COMMIT_FILE = 'commit_success.txt'

# Settings that may differ between the original run and its `--resume` (held-out
# evaluation settings change what is measured, not what the loop does).
RESUME_MAY_CHANGE = ('cycles', 'resume', 'output', 'eval_every', 'eval_tasks', 'eval_split',
                     'after_every')

_ITEMS = ('lora', 'opt_state', 'rng', 'meta')


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
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *unused_exc):
    self.close()

  def all_rounds(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_round(self) -> int | None:
    return self._manager.latest_step()

  def save(self, round_index: int, lora, opt_state, rng, meta: dict):
    """Writes round `round_index` and returns once it is complete on disk."""
    if round_index < 1:
      raise ValueError(f'round_index must be >= 1, got {round_index}')
    if round_index in self.all_rounds():
      raise UserError(
          f'round {round_index} already has a checkpoint in {self._checkpoint_dir};'
          ' use --resume to continue this run or a new --output')
    args = ocp.args.Composite(  # As host NumPy: one writer, any number of processes.
        lora=ocp.args.StandardSave(_on_host(lora)),
        opt_state=ocp.args.StandardSave(_on_host(opt_state)),
        rng=ocp.args.StandardSave(_raw_key_data(rng)),
        meta=ocp.args.JsonSave(jsonable(meta)))
    if not self._manager.save(round_index, args=args):
      raise RuntimeError(f'Orbax declined to save step {round_index}')
    self._manager.wait_until_finished()
    if distributed.is_main() and (
        round_index == 1 or not (self.directory / RUN_CONFIG_FILE).exists()):
      # Written when the first round commits: a start that fails (a mistyped --model, a
      # kill in round 1) leaves no configuration for a later --resume to be held to.
      write_json_atomic(self.directory / RUN_CONFIG_FILE, self._run_config)

  def restore(self, round_index: int, lora_like, opt_state_like):
    """Returns `(lora, opt_state, rng, meta)` of a saved round, shaped like *_like."""
    restored = self._restore_items(round_index, ocp.args.Composite(
        lora=ocp.args.StandardRestore(_on_host(lora_like)),
        opt_state=ocp.args.StandardRestore(_on_host(opt_state_like)),
        rng=ocp.args.StandardRestore(),  # Key size depends on the PRNG impl.
        meta=ocp.args.JsonRestore()))
    rng = np.asarray(restored['rng'], np.uint32)
    return restored['lora'], restored['opt_state'], rng, restored['meta']

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

  def check_resume(self, run_config: dict, defaults: dict | None = None):
    """Raises `UserError` naming every setting that differs from the stored run.

    A setting the stored run predates counts as its value in `defaults` (the behaviour
    the run had before the setting existed).
    """
    if not self.all_rounds():
      return  # Nothing committed yet: whatever config is there belongs to no round.
    stored = _read_json(self.directory / RUN_CONFIG_FILE)
    current = json.loads(json.dumps(jsonable(run_config)))  # Tuples -> lists, as stored.
    older = json.loads(json.dumps(jsonable(defaults or {})))
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


def _read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as error:
    raise UserError(f'cannot read {path} ({error}); start a fresh --output') from error
