"""Degraded versions of a correct command, to check that each measure scores them lower.

Each builder takes a held-out record and one of its reference commands and returns the
command made worse in one way, or None where the class does not apply (no intent option
to drop, no exclusive options in the tool's spec, or a result equal to the reference):

  drop_intent    the options of the intent alternative the reference realises, removed
  drop_target    the host / CIDR / URL (with the option that carries it), removed
  wrong_value    the first named value (host, CIDR, URL, domain, port, ...) replaced by
                 another of the same kind
  unknown_option an option no tool documents, added
  duplicate      the reference's first non-repeatable option, written twice
  contradiction  two options the spec declares mutually exclusive
  extra_command  `; rm -rf /tmp/x` appended
  bare           the program and its positional arguments (else the target, else the
                 port: `nc 9001` for a listener) alone
  flag_spam      six documented flags the task did not ask for, added
  prose          a sentence about the task instead of a command

Commands are rebuilt from shell words (`shell.split_words`), so quoting survives. Nothing
here runs a command.
"""

import collections
import os
import re
import shlex
from collections.abc import Callable

from inversion_jax.quality import options as options_lib
from inversion_jax.quality import shell
from inversion_jax.quality import specs as specs_lib

TARGET_ROLES = ('host', 'cidr', 'url')
VALUE_ROLES = ('host', 'cidr', 'url', 'domain', 'port', 'ports', 'software', 'user',
               'wordlist', 'passlist', 'userlist', 'rate', 'top_n', 'output', 'input')
UNKNOWN_OPTION = '--frobnicate'
EXTRA_COMMAND = 'rm -rf /tmp/x'
SPAM_COUNT = 6
_NOT_SPAM = re.compile(r'help|version|update|usage|list (the )?(scripts|plugins|modules)',
                       re.IGNORECASE)
_OPERATORS = shell.SEPARATORS | shell.REDIRECTS
_IPV4 = re.compile(r'(?<![\d.])(\d{1,3})(\.\d{1,3}\.\d{1,3}\.\d{1,3})(?![\d])')


class Located:
  """A command's shell words and where the tool's segment lies in them."""

  def __init__(self, record: dict, command: str):
    self.words = shell.split_words(command)
    self.spec = specs_lib.get(record['tool'])[0]
    binaries = {b for spec in specs_lib.get(record['tool']) for b in spec.binaries}
    start = next(i for i, w in enumerate(self.words)
                 if os.path.basename(w) in binaries or os.path.basename(w)[:-3] in binaries)
    end = start + 1
    while end < len(self.words) and self.words[end] not in _OPERATORS:
      end += 1
    self.start, self.end = start, end
    self.program = self.words[start]
    self.mode, _ = options_lib.resolve_mode(self.spec, self.args)

  def parse(self, words) -> options_lib.Parsed:
    """`words` parsed as arguments of the command's mode (gobuster's `-u` is `dir`'s)."""
    return options_lib.parse(self.spec, ([self.mode] if self.mode else []) + list(words))

  @property
  def args(self) -> list[str]:
    return self.words[self.start + 1:self.end]

  def with_args(self, args) -> str:
    return join(self.words[:self.start + 1] + list(args) + self.words[self.end:])


def join(words) -> str:
  return ' '.join(w if w in _OPERATORS else shlex.quote(w) for w in words)


def _counts(spec, args):
  parsed = options_lib.parse(spec, args)
  return collections.Counter(parsed.canonicals()), parsed


def remove_option(spec, args: list[str], canonical: str) -> list[str] | None:
  """`args` without one occurrence of option `canonical` (its value too), else None."""
  before, parsed = _counts(spec, args)
  if not before[canonical]:
    return None
  want = before - collections.Counter({canonical: 1})
  candidates = []
  for index, word in enumerate(args):
    if not options_lib.looks_like_option(word):
      continue
    candidates += [args[:index] + args[index + 1:], args[:index] + args[index + 2:]]
    bare = canonical.lstrip('-')
    if len(bare) == 1 and not word.startswith('--') and bare in word[1:]:
      shorter = '-' + word[1:].replace(bare, '', 1)
      candidates.append(args[:index] + ([shorter] if shorter != '-' else []) + args[index + 1:])
  for candidate in candidates:
    after, new = _counts(spec, candidate)
    if after == want and new.positionals == parsed.positionals and not new.unknown:
      return candidate
  return None


def option_span(located: 'Located', canonical: str) -> list[str] | None:
  """The words of one occurrence of `canonical` as written (`-p 80`, `--rate=9`)."""
  args = located.args
  for index, word in enumerate(args):
    for size in (1, 2):
      span = args[index:index + size]
      parsed = located.parse(span)
      if len(span) == size and options_lib.looks_like_option(word) and \
          parsed.canonicals() == [canonical] and not parsed.missing_values:
        return span
  return None


def intent_canonicals(spec, mode, alternative) -> list[str]:
  """Canonical names of an intent alternative's option strings ('-p-' -> '-p')."""
  out = []
  for text in alternative:
    if text in spec.modes:
      continue
    parsed = options_lib.parse(spec, ([mode] if mode else []) + shlex.split(text))
    out += [c for c in parsed.canonicals() if c not in out]
  return out


def drop_intent(record, command):
  located = Located(record, command)
  have, _ = _counts(located.spec, located.args)
  for alternative in record['intent_options']:
    names = intent_canonicals(located.spec, located.mode, alternative)
    if names and all(have[n] for n in names):
      args = located.args
      for name in names:
        args = remove_option(located.spec, args, name)
        if args is None:
          return None
      return located.with_args(args)
  return None


def drop_target(record, command):
  located = Located(record, command)
  targets = _values(record, TARGET_ROLES)
  if not targets:
    return None
  args = list(located.args)
  for target in targets:
    for index, word in enumerate(args):
      if target not in word:
        continue
      previous = args[index - 1] if index else ''
      if word == target and options_lib.looks_like_option(previous) and \
          located.parse([previous, word]).positionals == []:
        args[index - 1:index + 1] = [None, None]
      else:
        args[index] = None
    args = [a for a in args if a is not None]
  return located.with_args(args)


def _other(value: str, role: str) -> str:
  """Another value of the same kind: a host, network, URL, port list or file name."""
  if _IPV4.search(value):  # Addresses, networks, ranges and URLs on an address: 10.x -> 11.x.
    return _IPV4.sub(lambda m: f'{int(m[1]) % 250 + 1}{m[2]}', value)
  if role in ('port', 'ports', 'rate', 'top_n') or re.fullmatch(r'[\d,\-:]+', value):
    return re.sub(r'\d+', lambda m: str(int(m.group()) + 1), value)
  if '://' in value:
    return re.sub(r'://([^/:]+)', lambda m: f'://other-{m.group(1)}', value, count=1)
  if role in ('host', 'domain', 'cidr'):
    return f'other-{value}'
  stem, dot, suffix = value.rpartition('.')
  return f'{stem}_other{dot}{suffix}' if dot and '/' not in suffix else f'{value}x'


def wrong_value(record, command):
  for role in VALUE_ROLES:
    for value in _values(record, (role,)):
      if value in command:
        changed = command.replace(value, _other(value, role))
        return changed if changed != command else None
  return None


def unknown_option(record, command):
  located = Located(record, command)
  return located.with_args(located.args + [UNKNOWN_OPTION])


def duplicate(record, command):
  located = Located(record, command)
  parsed = options_lib.parse(located.spec, located.args)
  repeatable = {o.canonical for spec in specs_lib.get(record['tool']) for o in spec.options
                if o.repeatable}  # Repeatable in any variant (`nc -v -v`) is no duplicate.
  for occurrence in parsed.options:
    if occurrence.spec.canonical in repeatable:
      continue
    span = option_span(located, occurrence.spec.canonical)
    if span:
      return located.with_args(located.args + span)
  return None


def _placeholder(option: specs_lib.OptionSpec) -> list[str]:
  """A well-formed value for an option added by a degradation."""
  if not option.value:
    return []
  if option.choices:
    return [option.choices[0]]
  return [{'port_list': '80', 'port': '80', 'number': '1', 'host': '10.0.0.1',
           'url': 'http://10.0.0.1/', 'path': 'extra.txt'}.get(option.value, 'x')]


def contradiction(record, command):
  located = Located(record, command)
  spec, mode = located.spec, located.mode
  table = options_lib.OptionTable(spec, mode)
  have, _ = _counts(spec, located.args)
  groups = list(spec.exclusive) + (list(spec.modes[mode].exclusive) if mode in spec.modes else [])
  # Only what every variant forbids: netcat's traditional variant has no such groups.
  everywhere = set.intersection(*({frozenset(g.options) for g in v.exclusive}
                                  for v in specs_lib.get(record['tool'])))
  groups = [g for g in groups if frozenset(g.options) in everywhere or g not in spec.exclusive]
  groups.sort(key=lambda g: not any(have[table.exact(o).canonical] for o in g.options
                                    if table.exact(o)))
  for group in groups:
    options = [table.exact(o) for o in group.options]
    if None in options:
      continue
    present = [o for o in options if have[o.canonical]]
    added = [o for o in options if not have[o.canonical]][:2 - min(len(present), 1)]
    if len(present) + len(added) >= 2:
      extra = [w for o in added for w in [o.canonical] + _placeholder(o)]
      return located.with_args(located.args + extra)
  return None


def extra_command(record, command):
  del record
  return f'{command}; {EXTRA_COMMAND}'


def bare(record, command):
  located = Located(record, command)
  positionals = options_lib.parse(located.spec, located.args).positionals
  words = positionals or _values(record, TARGET_ROLES) or _values(record, ('port',))
  out = join([located.program] + words)
  return out if out != join(shell.split_words(command)) else None


def flag_spam(record, command):
  located = Located(record, command)
  spec, mode = located.spec, located.mode
  have, _ = _counts(spec, located.args)
  grouped = {o for g in spec.exclusive for o in g.options}
  if mode in spec.modes:
    grouped |= {o for g in spec.modes[mode].exclusive for o in g.options}
  chosen = []
  for option in spec.options_for(mode):
    if option.value or have[option.canonical] or set(option.names) & grouped or \
        _NOT_SPAM.search(option.doc) or any(n in ('-h', '--help', '-V') for n in option.names):
      continue
    chosen.append(option.canonical)
    if len(chosen) == SPAM_COUNT:
      break
  return located.with_args(located.args + chosen) if chosen else None


def prose(record, command):
  del command
  target = (_values(record, TARGET_ROLES) or _values(record, VALUE_ROLES) or ['the target'])[0]
  return (f'To do this you would use {record["tool"]} against {target} with the options '
          'that fit the task, then read its output.')


def _values(record, roles) -> list[str]:
  out = []
  for role in roles:
    value = record['values'].get(role)
    out += value if isinstance(value, list) else [value] if value else []
  return out


CLASSES: dict[str, Callable[[dict, str], str | None]] = {
    'drop_intent': drop_intent, 'drop_target': drop_target, 'wrong_value': wrong_value,
    'unknown_option': unknown_option, 'duplicate': duplicate, 'contradiction': contradiction,
    'extra_command': extra_command, 'bare': bare, 'flag_spam': flag_spam, 'prose': prose}


def degrade(name: str, record: dict, command: str) -> str | None:
  """The reference `command` degraded by class `name`; None where it does not apply or
  where the result is one of the task's references."""
  out = CLASSES[name](record, command)
  if out is None or name == 'prose':
    return out
  same = {join(shell.split_words(c)) for c in record['references']}
  return None if join(shell.split_words(out)) in same else out  # Another correct form.
