"""Reads a tool's arguments the way its own option parser would, from its spec.

One algorithm covers getopt (bundled `-lvnp 4444`, attached `-p22`), getopt_long
(`--rate=1000`, `--rate 1000`), getopt_long_only (nmap's `-top-ports`), optparse and
Getopt::Long (unique prefixes, `-host`), and subcommands (gobuster `dir`); the spec's
`syntax` block says which rules apply. Per word, in order:

1. `--name=value` (when `long_equals`): the part before `=` must name an option.
2. An exact name (case-folded when `case_insensitive`); a value-taking option takes the
   next word, or reports `missing_value` when there is none or it is an option.
3. A unique prefix of a long name (when `long_abbreviations`).
4. A bundle prefix followed by letters that each make a flag with it (`bundle_prefixes`).
5. The longest value-taking name the word starts with, the rest being the value (when
   `attached_values`): `-p22`, `-T4`, `-PS80`.
6. A bundle of one-letter flags (when `short_clusters`): `-lvn`; the first letter that
   takes a value takes the rest of the word or the next word.
7. Otherwise the word is an `unknown_option`.
A word `--` ends options; words not starting with `-` (and a lone `-`) are positionals.
"""

import dataclasses
import re

from inversion_jax.quality import specs as specs_lib

_NUMBER = re.compile(r'^\d+(\.\d+)?[smhk]?$', re.IGNORECASE)
_PORT_LIST = re.compile(r'^(-|[TUSP]:)?[\d\-,:TUSP]*\d[\d\-,:TUSP]*$|^-$', re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Occurrence:
  """One option as written: its spec, the word(s) it came from, its value."""

  spec: specs_lib.OptionSpec
  written: str
  value: str | None


@dataclasses.dataclass
class Parsed:
  mode: str | None = None
  options: list[Occurrence] = dataclasses.field(default_factory=list)
  positionals: list[str] = dataclasses.field(default_factory=list)
  unknown: list[str] = dataclasses.field(default_factory=list)
  missing_values: list[str] = dataclasses.field(default_factory=list)
  bad_values: list[str] = dataclasses.field(default_factory=list)

  def canonicals(self) -> list[str]:
    return [o.spec.canonical for o in self.options]


class OptionTable:
  """The names a spec (and one of its modes) accepts, indexed for the parser."""

  def __init__(self, spec: specs_lib.ToolSpec, mode: str | None):
    self.spec = spec
    self.syntax = spec.syntax
    self.options = spec.options_for(mode)
    fold = self._fold
    self.by_name = {}
    for option in self.options:
      for name in option.names:
        self.by_name.setdefault(fold(name), option)

  def _fold(self, name: str) -> str:
    return name.lower() if self.syntax.case_insensitive else name

  def exact(self, name: str):
    """The option `name` names; a long name may use any of the spec's long prefixes."""
    option = self.by_name.get(self._fold(name))
    if option is None and len(name) > 2 and name.startswith('-'):
      bare = name.lstrip('-')
      if len(bare) > 1:
        for prefix in self.syntax.long_prefixes:
          option = option or self.by_name.get(self._fold(prefix + bare))
    return option

  def is_long(self, word: str) -> bool:
    return word.startswith('--') or (len(word) > 2 and word.startswith('-'))

  def abbreviation(self, word: str):
    """The one long option `word` is a unique prefix of (optparse, Getopt::Long)."""
    if not self.syntax.long_abbreviations:
      return None
    bare = self._fold(word).lstrip('-')
    dashes = len(word) - len(word.lstrip('-'))
    hits = {}
    for name, option in self.by_name.items():
      name_bare = name.lstrip('-')
      if len(name_bare) < 2 or not name_bare.startswith(bare):
        continue
      if self._prefix_allowed(word[:dashes], name[:len(name) - len(name_bare)]):
        hits[id(option)] = option
    return next(iter(hits.values())) if len(hits) == 1 else None

  def _prefix_allowed(self, written: str, declared: str) -> bool:
    """`--ho` abbreviates `--host`; with ["-", "--"] long prefixes any of them does."""
    return written == declared or (written in self.syntax.long_prefixes and
                                   declared in self.syntax.long_prefixes)

  def attached(self, word: str):
    if not self.syntax.attached_values:
      return None
    folded = self._fold(word)
    best = None
    for name, option in self.by_name.items():
      if option.value and folded.startswith(name) and len(folded) > len(name):
        if best is None or len(name) > len(best[0]):
          best = (name, option)
    return best


def looks_like_option(word: str) -> bool:
  return len(word) > 1 and word.startswith('-') and not re.fullmatch(r'-\d[\d,.\-]*', word)


def resolve_mode(spec: specs_lib.ToolSpec, args) -> tuple[str | None, list[str]]:
  """(mode, remaining args): the mode is the first argument when the spec has modes."""
  if spec.modes and args and args[0] in spec.modes:
    return args[0], list(args[1:])
  return None, list(args)


def parse(spec: specs_lib.ToolSpec, args) -> Parsed:
  """Parses `args` (the words after the program name) against `spec`."""
  mode, words = resolve_mode(spec, args)
  table = OptionTable(spec, mode)
  parsed = Parsed(mode=mode)
  index = 0
  while index < len(words):
    word = words[index]
    index += 1
    if word == '--':
      parsed.positionals.extend(words[index:])
      break
    if not looks_like_option(word):
      parsed.positionals.append(word)
      continue
    index = _parse_option(table, word, words, index, parsed)
  return parsed


def _next_value(option, words, index, parsed, written):
  """Takes the next word as `option`'s value; returns the new index."""
  if option.optional_value:  # Optional values are attached only (`-PS`, `-PS80`).
    parsed.options.append(Occurrence(option, written, None))
    return index
  if index < len(words) and not looks_like_option(words[index]):
    _add(parsed, option, written, words[index])
    return index + 1
  parsed.missing_values.append(written)
  parsed.options.append(Occurrence(option, written, None))
  return index


def _add(parsed, option, written, value):
  parsed.options.append(Occurrence(option, written, value))
  if not value_fits(option, value):
    parsed.bad_values.append(f'{written} {value}')


def value_fits(option: specs_lib.OptionSpec, value: str) -> bool:
  """Whether `value` has the shape of the option's value kind (numbers, port lists)."""
  if option.choices and value.lower() not in {c.lower() for c in option.choices}:
    return False
  if option.value == 'number':
    return bool(_NUMBER.match(value)) or bool(re.fullmatch(r'[\d.:\-]+', value))
  if option.value in ('port_list', 'port'):
    return bool(_PORT_LIST.match(value)) or bool(re.fullmatch(r'[\w\-]+(,[\w\-]+)*', value))
  return bool(value)


def _parse_option(table: OptionTable, word, words, index, parsed) -> int:
  syntax = table.syntax
  if syntax.long_equals and '=' in word and table.is_long(word):
    name, value = word.split('=', 1)
    option = table.exact(name) or table.abbreviation(name)
    if option is not None and option.value:
      _add(parsed, option, word, value)
      return index
    if option is not None:
      parsed.unknown.append(word)  # A flag given a value.
      return index
  option = table.exact(word)
  if option is None and (table.is_long(word) or not syntax.short_clusters):
    option = table.abbreviation(word)
  if option is not None:
    if option.value:
      return _next_value(option, words, index, parsed, word)
    parsed.options.append(Occurrence(option, word, None))
    return index
  bundle = _prefix_bundle(table, word)
  if bundle:
    for written, option in bundle:
      parsed.options.append(Occurrence(option, written, None))
    return index
  attached = table.attached(word)
  if attached is not None:
    name, option = attached
    rest = word[len(name):]
    if len(name) == 2 and set(rest) == {name[1]}:  # `-vvv`: a counted flag, not a value.
      parsed.options.append(Occurrence(option, word, None))
    else:
      _add(parsed, option, word, rest)
    return index
  if syntax.short_clusters and not word.startswith('--') and len(word) > 2:
    cluster = _cluster(table, word[1:])
    if cluster is not None:
      for letter, option, rest in cluster:
        if not option.value:
          parsed.options.append(Occurrence(option, '-' + letter, None))
        elif rest:
          _add(parsed, option, word, rest)
        else:
          index = _next_value(option, words, index, parsed, '-' + letter)
      return index
  parsed.unknown.append(word)
  return index


def _prefix_bundle(table: OptionTable, word: str):
  """[(name, option)] when `word` is a bundle prefix + letters each naming a flag (`-sSU`)."""
  for prefix in table.syntax.bundle_prefixes:
    letters = word[len(prefix):]
    if word.startswith(prefix) and len(letters) > 1:
      options = [(prefix + letter, table.exact(prefix + letter)) for letter in letters]
      if all(o is not None and not o.value for _, o in options):
        return options
  return None


def _cluster(table: OptionTable, letters: str):
  """[(letter, option, attached rest)] when every letter is a known one-letter option."""
  out = []
  for position, letter in enumerate(letters):
    option = table.exact('-' + letter)
    if option is None:
      return None
    if option.value:
      out.append((letter, option, letters[position + 1:]))
      return out
    out.append((letter, option, ''))
  return out
