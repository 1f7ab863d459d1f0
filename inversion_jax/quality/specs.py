"""Tool specifications as data: what each tool's documentation says its options are.

One JSON file per tool (or per variant: netcat has an OpenBSD and a traditional one) in
`quality/specs/`, written by `experiments/extract_specs.py` from a curated source in
`quality/spec_sources/` that it checks against the tool's man page or upstream help text.
The validator reads only these files; nothing here runs a tool.

Schema (every field is checked; an unknown field is a `UserError` naming file and field):

  tool         the task bank's tool name ("nmap", "netcat", ...).
  variant      optional variant name ("openbsd", "traditional"); a tool may have several.
  binaries     program names that invoke it ("nc", "netcat", "nc.openbsd").
  source       where it was read: {kind: debian|upstream, package, version, files, url, notes}.
  syntax       how the tool's parser reads words:
                 short_clusters       getopt bundling: `-lvnp 4444` = -l -v -n -p 4444.
                 attached_values      a value may follow the option name directly: `-p22`.
                 long_prefixes        prefixes of multi-letter names: ["--"]; nmap and nikto
                                      also accept one dash (getopt_long_only, Getopt::Long).
                 long_equals          `--name=value` is accepted.
                 long_abbreviations   a unique prefix of a long name is accepted (optparse,
                                      Getopt::Long).
                 case_insensitive     option names match ignoring case (Getopt::Long).
                 bundle_prefixes      prefixes whose one-letter suffixes bundle (nmap's
                                      `-sSU` = -sS -sU: its getopt reads `-s` + letters).
  options      [{names, value, optional_value, repeatable, choices, role, doc}]:
                 names                every alias; the first is canonical.
                 value                null (a flag) or its kind, one of VALUE_KINDS.
                 optional_value       the value may be absent (then only attached).
                 repeatable           giving it twice is documented use (`-v -v`).
                 choices              allowed values, when the documentation lists them.
                 role                 which concrete value of a task it carries, one of ROLES.
                 doc                  the documentation's words, shortened.
                 source               where an option is documented when that is not the
                                      spec's own source (an upstream release's help or
                                      code, newer than the distribution's man page).
  modes        optional {mode: {options, required, exclusive, doc}}: subcommands such as
               gobuster's `dir`; the mode is the first word after the program.
  mode_required  whether a mode must be given.
  exclusive    [{options, doc}]: options that contradict each other (at most one of them).
  required     [{any_of, unless_positional, doc}]: any_of is a list of alternatives, each a
               list of options that must all appear; "@positional" stands for a positional
               argument; unless_positional (optional) lists regexes: a positional matching
               one lifts the requirement (hydra's vnc/redis/snmp modules need no login).
  positionals  {kinds, min, doc}: what bare words are (targets, terms) and how many are needed.
  intents      {intent: {keywords, options, unless, default, doc}}: `keywords` are regular
               expressions over the lower-cased task text (its values masked, see the
               validator); `options` the alternatives that realise the intent; `unless`
               (optional) regexes that mark a keyword's word as playing another role
               ("connect to the listener": the other side listens); `default` (optional)
               regexes for tasks the tool's default behaviour already does ("the top 1000
               ports": nmap's default), where the intent needs no option.
"""

import dataclasses
import functools
import importlib.resources
import json
import pathlib
import re
from collections.abc import Mapping

from inversion_jax.errors import UserError

VALUE_KINDS = ('port_list', 'port', 'host', 'url', 'path', 'number', 'word', 'string')
ROLES = ('host', 'cidr', 'url', 'port', 'ports', 'wordlist', 'userlist', 'passlist', 'user',
         'password', 'service', 'software', 'version', 'rate', 'top_n', 'timing', 'output',
         'input', 'extensions', 'domain', 'combolist')
POSITIONAL = '@positional'

_TOP_FIELDS = {'tool', 'variant', 'binaries', 'source', 'syntax', 'options', 'modes',
               'mode_required', 'exclusive', 'required', 'positionals', 'intents'}
_SOURCE_FIELDS = {'kind', 'package', 'version', 'distribution', 'files', 'url', 'notes',
                  'sha256'}
_SYNTAX_FIELDS = {'short_clusters', 'attached_values', 'long_prefixes', 'long_equals',
                  'long_abbreviations', 'case_insensitive', 'bundle_prefixes'}
_OPTION_FIELDS = {'names', 'value', 'optional_value', 'repeatable', 'choices', 'role', 'doc',
                  'source'}
_MODE_FIELDS = {'options', 'required', 'exclusive', 'doc'}
_GROUP_FIELDS = {'options', 'doc'}
_REQUIRED_FIELDS = {'any_of', 'unless_positional', 'doc'}
_POSITIONAL_FIELDS = {'kinds', 'min', 'doc'}
_INTENT_FIELDS = {'keywords', 'options', 'unless', 'default', 'doc'}


@dataclasses.dataclass(frozen=True)
class Syntax:
  short_clusters: bool = True
  attached_values: bool = True
  long_prefixes: tuple[str, ...] = ('--',)
  long_equals: bool = True
  long_abbreviations: bool = False
  case_insensitive: bool = False
  bundle_prefixes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class OptionSpec:
  names: tuple[str, ...]
  value: str | None = None
  optional_value: bool = False
  repeatable: bool = False
  choices: tuple[str, ...] | None = None
  role: str | None = None
  doc: str = ''
  source: str = ''

  @property
  def canonical(self) -> str:
    return self.names[0]


@dataclasses.dataclass(frozen=True)
class Requirement:
  any_of: tuple[tuple[str, ...], ...]
  doc: str = ''
  unless_positional: tuple[str, ...] = ()  # Regexes: a matching positional lifts it.


@dataclasses.dataclass(frozen=True)
class ExclusiveGroup:
  options: tuple[str, ...]
  doc: str = ''


@dataclasses.dataclass(frozen=True)
class Mode:
  name: str
  options: tuple[OptionSpec, ...]
  required: tuple[Requirement, ...]
  exclusive: tuple[ExclusiveGroup, ...]
  doc: str = ''


@dataclasses.dataclass(frozen=True)
class Intent:
  name: str
  keywords: tuple[str, ...]
  options: tuple[tuple[str, ...], ...]
  doc: str = ''
  unless: tuple[str, ...] = ()
  default: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ToolSpec:
  """One tool (variant) as its documentation describes it."""

  tool: str
  variant: str | None
  binaries: tuple[str, ...]
  source: Mapping[str, object]
  syntax: Syntax
  options: tuple[OptionSpec, ...]
  modes: Mapping[str, Mode]
  mode_required: bool
  exclusive: tuple[ExclusiveGroup, ...]
  required: tuple[Requirement, ...]
  positional_kinds: tuple[str, ...]
  min_positionals: int
  intents: Mapping[str, Intent]

  @property
  def label(self) -> str:
    return f'{self.tool} ({self.variant})' if self.variant else self.tool

  def options_for(self, mode: str | None) -> tuple[OptionSpec, ...]:
    """Global options plus those of `mode`."""
    return self.options + (self.modes[mode].options if mode in self.modes else ())


def _check_fields(obj, allowed: set[str], where: str, path) -> dict:
  if not isinstance(obj, dict):
    raise UserError(f'{path}: {where} must be a JSON object, got {type(obj).__name__}')
  unknown = sorted(set(obj) - allowed)
  if unknown:
    raise UserError(f'{path}: unknown field {unknown[0]!r} in {where}; allowed fields are '
                    f'{", ".join(sorted(allowed))}')
  return obj


def _option(obj, where, path) -> OptionSpec:
  _check_fields(obj, _OPTION_FIELDS, where, path)
  names = obj.get('names')
  if not names or not all(isinstance(n, str) and n for n in names):
    raise UserError(f'{path}: {where} needs a non-empty list of names')
  value = obj.get('value')
  if value is not None and value not in VALUE_KINDS:
    raise UserError(f'{path}: {where} ({names[0]}) has value kind {value!r}; use one of '
                    f'{", ".join(VALUE_KINDS)} or null')
  role = obj.get('role')
  if role is not None and role not in ROLES:
    raise UserError(f'{path}: {where} ({names[0]}) has role {role!r}; use one of '
                    f'{", ".join(ROLES)}')
  choices = obj.get('choices')
  return OptionSpec(tuple(names), value, bool(obj.get('optional_value', False)),
                    bool(obj.get('repeatable', False)),
                    tuple(str(c) for c in choices) if choices else None, role,
                    str(obj.get('doc', '')), str(obj.get('source', '')))


def _alternatives(value, where, path) -> tuple[tuple[str, ...], ...]:
  if not isinstance(value, list) or not all(
      isinstance(alt, list) and alt and all(isinstance(o, str) for o in alt) for alt in value):
    raise UserError(f'{path}: {where} must be a list of alternatives, each a non-empty list '
                    'of option strings')
  return tuple(tuple(alt) for alt in value)


def _patterns(items, where, path) -> tuple[str, ...]:
  """Regular expressions of a spec field; one that does not compile is a UserError."""
  for pattern in items:
    try:
      re.compile(pattern)
    except re.error as error:
      raise UserError(f'{path}: {where} {pattern!r} is not a regular expression ({error})'
                      ) from None
  return tuple(items)


def _requirements(items, where, path) -> tuple[Requirement, ...]:
  out = []
  for i, item in enumerate(items or ()):
    _check_fields(item, _REQUIRED_FIELDS, f'{where}[{i}]', path)
    unless = _patterns(item.get('unless_positional', ()), f'{where}[{i}].unless_positional',
                       path)
    out.append(Requirement(_alternatives(item.get('any_of'), f'{where}[{i}].any_of', path),
                           str(item.get('doc', '')), unless))
  return tuple(out)


def _exclusive(items, where, path) -> tuple[ExclusiveGroup, ...]:
  out = []
  for i, item in enumerate(items or ()):
    _check_fields(item, _GROUP_FIELDS, f'{where}[{i}]', path)
    options = item.get('options')
    if not isinstance(options, list) or len(options) < 2:
      raise UserError(f'{path}: {where}[{i}] needs at least two options')
    out.append(ExclusiveGroup(tuple(options), str(item.get('doc', ''))))
  return tuple(out)


def parse_spec(obj, path='<spec>') -> ToolSpec:
  """Validates one spec object and builds its `ToolSpec`."""
  _check_fields(obj, _TOP_FIELDS, 'the spec', path)
  for field in ('tool', 'binaries', 'source', 'syntax', 'options'):
    if field not in obj:
      raise UserError(f'{path}: missing field {field!r}')
  source = _check_fields(obj['source'], _SOURCE_FIELDS, 'source', path)
  if not source.get('package') or not source.get('version'):
    raise UserError(f'{path}: source needs the package and the version it was read from')
  syntax = _check_fields(obj['syntax'], _SYNTAX_FIELDS, 'syntax', path)
  syntax = Syntax(**{k: tuple(v) if isinstance(v, list) else v for k, v in syntax.items()})
  options = tuple(_option(o, f'options[{i}]', path) for i, o in enumerate(obj['options']))
  modes = {}
  for name, mode in (obj.get('modes') or {}).items():
    _check_fields(mode, _MODE_FIELDS, f'modes.{name}', path)
    modes[name] = Mode(
        name, tuple(_option(o, f'modes.{name}.options[{i}]', path)
                    for i, o in enumerate(mode.get('options', ()))),
        _requirements(mode.get('required'), f'modes.{name}.required', path),
        _exclusive(mode.get('exclusive'), f'modes.{name}.exclusive', path),
        str(mode.get('doc', '')))
  positionals = _check_fields(obj.get('positionals', {}), _POSITIONAL_FIELDS, 'positionals',
                              path)
  intents = {}
  for name, intent in (obj.get('intents') or {}).items():
    _check_fields(intent, _INTENT_FIELDS, f'intents.{name}', path)
    patterns = {field: _patterns(intent.get(field, ()), f'intents.{name} {field}', path)
                for field in ('keywords', 'unless', 'default')}
    intents[name] = Intent(name, patterns['keywords'],
                           _alternatives(intent.get('options'), f'intents.{name}.options', path),
                           str(intent.get('doc', '')), patterns['unless'], patterns['default'])
  spec = ToolSpec(
      tool=str(obj['tool']), variant=obj.get('variant'), binaries=tuple(obj['binaries']),
      source=dict(source), syntax=syntax, options=options, modes=modes,
      mode_required=bool(obj.get('mode_required', False)),
      exclusive=_exclusive(obj.get('exclusive'), 'exclusive', path),
      required=_requirements(obj.get('required'), 'required', path),
      positional_kinds=tuple(positionals.get('kinds', ())),
      min_positionals=int(positionals.get('min', 0)), intents=intents)
  _check_references(spec, path)
  return spec


def _check_references(spec: ToolSpec, path):
  """Groups and requirements may only name options the spec (or that mode) defines."""
  scopes = [(None, spec.exclusive, spec.required)] + [
      (name, mode.exclusive, mode.required) for name, mode in spec.modes.items()]
  for mode, groups, requirements in scopes:
    names = {n for o in spec.options_for(mode) for n in o.names} | set(spec.modes)
    names.add(POSITIONAL)
    words = [o for g in groups for o in g.options]
    words += [o for r in requirements for alt in r.any_of for o in alt]
    for word in words:
      if _option_name(word) not in names:
        raise UserError(f'{path}: {word!r} is used in a group or requirement'
                        f'{" of mode " + mode if mode else ""} but is not a defined option')


def _option_name(word: str) -> str:
  """'-T4' names option '-T' only when the spec says so; groups use bare names."""
  return word.split('=', 1)[0].split(' ', 1)[0]


def specs_dir() -> pathlib.Path:
  return pathlib.Path(str(importlib.resources.files('inversion_jax.quality') / 'specs'))


def load_file(path: str | pathlib.Path) -> ToolSpec:
  path = pathlib.Path(path)
  try:
    obj = json.loads(path.read_text())
  except FileNotFoundError:
    raise UserError(f'no spec file {path}') from None
  except ValueError as error:
    raise UserError(f'{path} is not valid JSON ({error})') from None
  return parse_spec(obj, path)


@functools.cache
def load_all(directory: str | None = None) -> Mapping[str, tuple[ToolSpec, ...]]:
  """Tool name -> its spec variants, from every `*.json` in `directory` (default: shipped)."""
  specs: dict[str, list[ToolSpec]] = {}
  for path in sorted(pathlib.Path(directory or specs_dir()).glob('*.json')):
    spec = load_file(path)
    specs.setdefault(spec.tool, []).append(spec)
  return {tool: tuple(variants) for tool, variants in specs.items()}


def get(tool: str, directory: str | None = None) -> tuple[ToolSpec, ...]:
  """The spec variants of `tool`; an unknown tool is a `UserError`."""
  specs = load_all(directory)
  if tool not in specs:
    raise UserError(f'unknown tool {tool!r}; specs exist for {", ".join(sorted(specs))}')
  return specs[tool]


def all_binaries(directory: str | None = None) -> dict[str, str]:
  """Program name -> tool, over every spec (to tell a wrong tool from prose)."""
  return {b: spec.tool for variants in load_all(directory).values() for spec in variants
          for b in spec.binaries}
