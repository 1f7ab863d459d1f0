"""Experiments as files: `--config=configs/X.py` (ml_collections) with dotted overrides.

A config file's `get_config()` starts from `base()`: every `RunConfig` setting by its flat
name (as the flag names it) with its default, derived from the dataclasses (a setting added
there is settable here without an edit), locked so that a misspelt name fails instead of
being ignored. `--config.cycles=3` overrides a value; the original's flags (`--cycles=3`) still win over the file (self_improve.py).
"""

import pathlib
import types
import typing

import ml_collections
from ml_collections import config_dict

from inversion_jax.errors import UserError
from inversion_jax.loop import experiment
from inversion_jax.loop import presets as presets_lib
from inversion_jax.loop import run_config


def _value_type(annotation):
  """The non-None type of `X | None` (ConfigDict needs it to accept a later value)."""
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
    return kinds[0] if len(kinds) == 1 else object
  return annotation if isinstance(annotation, type) else object


def base(preset: str = 'none') -> ml_collections.ConfigDict:
  """RunConfig's fields and defaults (with `preset`'s settings), locked against new names."""
  defaults = experiment.RunConfig().as_dict()
  values = {}
  for name, field in run_config.flat_fields().items():
    values[name] = (config_dict.placeholder(_value_type(field.type)) if defaults[name] is None
                    else defaults[name])
  config = ml_collections.ConfigDict(values)
  for key, value in presets_lib.check(preset).items():
    setattr(config, key, value)
  if preset != 'none':
    config.preset = preset
  config.lock()
  return config


def run_config_values(config) -> dict:
  """The file's settings as `RunConfig` keyword arguments; unknown names are a UserError."""
  values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  known = set(run_config.flat_fields())
  unknown = sorted(set(values) - known)
  if unknown:
    raise UserError(f'the config sets unknown fields {unknown}; the fields are RunConfig\'s '
                    '(inversion_jax/loop/run_config.py)')
  return {key: tuple(value) if isinstance(value, list) else value
          for key, value in values.items()}


def to_run_config(config) -> experiment.RunConfig:
  return experiment.RunConfig(**run_config_values(config))


def from_run_dir(directory: str | pathlib.Path) -> ml_collections.ConfigDict:
  """A finished or stopped run's resolved settings (its run_config.json) as a config."""
  from inversion_jax.train import export  # pylint: disable=g-import-not-at-top
  stored = export.read_run(directory)
  config = base()
  known = set(config.keys())
  for key, value in stored.items():  # Settings a newer or older version had are skipped.
    if key in known:
      setattr(config, key, tuple(value) if isinstance(value, list) else value)
  return config
