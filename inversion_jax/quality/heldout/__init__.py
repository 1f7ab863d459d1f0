"""The held-out evaluation set: security-tool tasks the loop never trains on.

Source of truth: `source.jsonl` next to this file, one task per line:

  id              "<tool>-NNN", unique.
  tool            one of the bank's nine tools.
  intent          snake_case name (the bank's intent names where they apply).
  task            the task sentence given to the model.
  values          role -> value or list of values: every concrete value the task names, each
                  appearing verbatim in `task` (roles are `inversion_jax.quality.specs.ROLES`).
  intent_options  alternatives, each a list of option strings that must all appear ([] when
                  the intent needs no option; gobuster's alternatives start with the mode).
  references      correct commands, checked against the tools' documentation: at least one,
                  and every correct form the task admits where they differ (long and short
                  option names, `-A` for `-sV -O -sC --traceroute`, `nc -l 7777` and
                  `nc -l -p 7777`); the NLC2CMD score takes the best over them. A record
                  without one, or with one its own validator rejects, is refused.
  compound        true for tasks that combine 2-3 requirements.
  small           true for the tasks of the `small` split.

Phrasings and values are disjoint from the task bank (its templates and `train` pools) and
from the few-shot exemplars of `inversion_jax.decode.prompts`; `tests/test_heldout.py` checks this.

Splits:
  test   every task (183).
  small  a fixed stratified subset for fast in-loop evaluation: 4 tasks per tool (36), chosen
         by hand to cover different intents of each tool, with at least one compound task per
         tool. Its tasks carry `"small": true` in source.jsonl.

`load(split)` reads a TFDS dataset (array_record, via `tfds.data_source`, no TensorFlow needed)
that it builds from source.jsonl on first use into `$INVERSION_JAX_CACHE/tfds` (default
`~/.cache/inversion_jax/tfds`), under a directory named after the source's sha256, so an edited
source is rebuilt and an old build is never read.
"""

import contextlib
import copy
import functools
import io
import logging
import os
import pathlib

from inversion_jax.errors import UserError

SPLITS = ('test', 'small')
CACHE_ENV = 'INVERSION_JAX_CACHE'


def cache_dir() -> pathlib.Path:
  """Root of the TFDS data dirs: $INVERSION_JAX_CACHE/tfds, else ~/.cache/inversion_jax/tfds."""
  root = os.environ.get(CACHE_ENV) or pathlib.Path.home() / '.cache' / 'inversion_jax'
  return pathlib.Path(root).expanduser() / 'tfds'


def data_dir() -> pathlib.Path:
  """The TFDS data dir for the current source.jsonl (named by its sha256)."""
  from inversion_jax.quality.heldout import builder  # Local: importing TFDS takes a second.
  return cache_dir() / f'heldout-{builder.source_sha256()[:16]}'


def load(split: str = 'test') -> list[dict]:
  """The split's tasks as plain dicts (fields as in source.jsonl), in source order."""
  if split not in SPLITS:
    raise UserError(f'unknown held-out split {split!r}; use one of {", ".join(SPLITS)}')
  return copy.deepcopy(list(_load(str(data_dir()), split)))


def data_source(split: str = 'test'):
  """The raw `tfds.data_source` of a split (random access to encoded examples)."""
  if split not in SPLITS:
    raise UserError(f'unknown held-out split {split!r}; use one of {", ".join(SPLITS)}')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from inversion_jax.quality.heldout import builder  # pylint: disable=g-import-not-at-top
  directory = prepare()
  return tfds.data_source(builder.NAME, split=split, data_dir=str(directory), download=False)


def prepare() -> pathlib.Path:
  """Builds the dataset for the current source if it is not built yet; returns its data dir."""
  directory = data_dir()
  _prepare(str(directory))
  return directory


@contextlib.contextmanager
def _quiet():
  """No progress bars, no stdout banner, no absl warnings about a not-yet-built directory."""
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  bars = tqdm_utils._active  # pylint: disable=protected-access
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  tqdm_utils.display_progress_bar(False)
  absl_logger.setLevel(logging.ERROR)
  try:
    # TFDS prints "Downloading and preparing dataset ..." to stdout; a library stays quiet.
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    absl_logger.setLevel(level)
    tqdm_utils.display_progress_bar(bars)


@functools.lru_cache(maxsize=None)
def _prepare(directory: str) -> None:
  from inversion_jax.quality.heldout import builder  # pylint: disable=g-import-not-at-top
  with _quiet():
    dataset = builder.InversionHeldout(data_dir=directory)
    if not dataset.is_prepared():
      dataset.download_and_prepare(file_format='array_record')


@functools.lru_cache(maxsize=None)
def _load(directory: str, split: str) -> tuple[dict, ...]:
  from inversion_jax.quality.heldout import builder  # pylint: disable=g-import-not-at-top
  _prepare(directory)
  source = builder.InversionHeldout(data_dir=directory).as_data_source(split=split)
  examples = [source[i] for i in range(len(source))]
  examples.sort(key=lambda example: int(example['index']))
  return tuple(builder.decode(example) for example in examples)
