"""`RunConfig` as absl flags: one flag per field, its help and choices from the field.

A setting added to `RunConfig` (or one of its groups) is a flag without an edit here. A
tuple field is a comma-separated list of numbers. Fields in `UNSET_DEFAULT` default to None as flags, so
the driver can tell a given value from the default (a preset fills the ones not given).
"""

import types
import typing

from absl import flags

from inversion_jax.errors import UserError
from inversion_jax.loop import run_config

# The threshold flag's own default is None: --target_acceptance or a preset sets it when the
# user did not (self_improve.config_from_flags); RunConfig's default applies otherwise.
UNSET_DEFAULT = ('threshold',)


def _base_type(annotation):
  """`int | None` -> int; other annotations as they are."""
  if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
    inner = [t for t in typing.get_args(annotation) if t is not type(None)]
    return inner[0]
  return annotation


def define(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines a flag for every RunConfig field in `flag_values`."""
  for name, field in run_config.flat_fields().items():
    kind = _base_type(field.type)
    default = None if name in UNSET_DEFAULT else field.default
    help_text, choices = field.metadata['help'], field.metadata['choices']
    group = run_config.group_of(name)
    if group:  # Where the library reads it: RunConfig.<group>.<name>.
      help_text = f'[{group}] {help_text}'
    if name in UNSET_DEFAULT:
      help_text += f' (default {field.default})'
    if choices:
      flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=flag_values)
    elif typing.get_origin(kind) is tuple:
      flags.DEFINE_list(name, [str(v) for v in default], help_text, flag_values=flag_values)
    else:
      define_kind = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                     float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
      define_kind(name, default, help_text, flag_values=flag_values)


def values(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
  """Every field's value from the flags; tuple fields parsed to numbers of the right count."""
  out = {}
  for name, field in run_config.flat_fields().items():
    value = flag_values[name].value
    kind = _base_type(field.type)
    if typing.get_origin(kind) is tuple:
      count = len(typing.get_args(kind))
      try:
        value = tuple(float(v) for v in value)
      except ValueError:
        value = ()
      if len(value) != count:
        raise UserError(f'--{name} needs {count} comma-separated numbers, got '
                        f'{",".join(flag_values[name].value)}')
    out[name] = value
  return out


def given(flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """The RunConfig fields given on the command line."""
  return [name for name in run_config.flat_fields() if flag_values[name].present]
