"""Shell words of a command line, split the way a POSIX shell would, never run.

`shlex` in punctuation mode gives words and operators; this module turns them into
pipeline segments (`|`, `&&`, `||`, `;`, `&`), drops redirections and their targets
(`> out.txt`, `2>&1`) and unwraps launchers (`sudo`, `env VAR=x`, `timeout 30`,
`python3 sqlmap.py`) so the validator sees the program and its arguments.
"""

import dataclasses
import os
import re
import shlex

SEPARATORS = {'|', '||', '&&', ';', '&', '|&', ';;'}
REDIRECTS = {'>', '>>', '<', '>&', '&>', '&>>', '>|', '<<', '<<<', '<&', '<>'}
_FD_REDIRECT = re.compile(r'(?<![^\s|;&])\d(?=>|<)')
# Launchers that run the next word as the program; value = how many words they take
# before it (options starting with '-' are skipped on top of that).
_LAUNCHERS = {'sudo': 0, 'doas': 0, 'time': 0, 'nohup': 0, 'nice': 0, 'exec': 0,
              'command': 0, 'proxychains': 0, 'proxychains4': 0, 'torsocks': 0,
              'timeout': 1, 'stdbuf': 0, 'env': 0}
_LAUNCHER_OPTIONS_WITH_VALUE = {'sudo': {'-u', '-g', '-C', '-h', '-p', '-U', '-r', '-t'},
                                'nice': {'-n'}, 'proxychains': {'-f'},
                                'proxychains4': {'-f'}, 'timeout': {'-s', '-k'}}
_INTERPRETERS = {'python', 'python2', 'python3', 'perl', 'ruby', 'bash', 'sh'}
_SCRIPT_SUFFIXES = ('.py', '.pl', '.rb', '.sh')


class ShellSyntaxError(ValueError):
  """The text is not a well-formed shell command line (unbalanced quotes, dangling |)."""


@dataclasses.dataclass(frozen=True)
class Segment:
  """One simple command of a command line: its program name and arguments."""

  program: str  # Basename without a script suffix: '/usr/bin/nmap' -> 'nmap'.
  args: tuple[str, ...]
  raw_program: str
  redirects: tuple[str, ...] = ()  # Files the segment's redirections name.
  joined_by: str = ''  # The operator before the segment ('|', '&&', ';', ...); '' first.


def split_words(command: str) -> list[str]:
  """Words and operators; raises ShellSyntaxError for unbalanced quotes."""
  text = _FD_REDIRECT.sub(' ', command)
  lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  lexer.commenters = ''
  try:
    return list(lexer)
  except ValueError as error:
    raise ShellSyntaxError(str(error)) from None


def segments(command: str) -> list[Segment]:
  """The simple commands of `command`, in order, redirections removed."""
  words = split_words(command)
  groups, current, joiners, joiner = [], [], [], ''
  for index, word in enumerate(words):
    if word in SEPARATORS:
      if not current and word != ';':
        raise ShellSyntaxError(f'{word!r} with no command before it')
      groups.append(current)
      joiners.append(joiner)
      current, joiner = [], word
      if index == len(words) - 1 and word not in (';', '&'):
        raise ShellSyntaxError(f'command line ends with {word!r}')
    else:
      current.append(word)
  groups.append(current)
  joiners.append(joiner)
  out = []
  for group, joiner in zip(groups, joiners):
    words, targets = _split_redirects(group)
    segment = unwrap(words) if words else None
    if segment is not None:
      out.append(dataclasses.replace(segment, redirects=tuple(targets), joined_by=joiner))
  return out


def check_balanced(command: str) -> None:
  """Raises ShellSyntaxError for unbalanced parentheses or braces outside quotes."""
  depth = {'(': 0, '{': 0}
  closing = {')': '(', '}': '{'}
  for word in split_words(command):
    for char in word if word in ('(', ')', '{', '}', '$(') else ():
      if char in depth:
        depth[char] += 1
      elif char in closing:
        depth[closing[char]] -= 1
        if depth[closing[char]] < 0:
          raise ShellSyntaxError(f'unmatched {char!r}')
  for opening, count in depth.items():
    if count:
      raise ShellSyntaxError(f'unclosed {opening!r}')


def _split_redirects(words: list[str]) -> tuple[list[str], list[str]]:
  """(words without redirections, the files redirections name)."""
  out, targets, skip = [], [], False
  for index, word in enumerate(words):
    if skip:
      skip = False
      targets.append(word)
      continue
    if word in REDIRECTS:
      if index == len(words) - 1:
        raise ShellSyntaxError(f'redirection {word!r} without a target')
      skip = True
      continue
    if word in ('(', ')', '$', '`', '{', '}'):
      continue
    out.append(word)
  return out, targets


def unwrap(words: list[str]) -> Segment | None:
  """Skips launchers and environment assignments; returns the real program's segment."""
  index = 0
  while index < len(words):
    word = words[index]
    name = os.path.basename(word)
    if re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*=.*', word):
      index += 1
    elif name in _LAUNCHERS:
      index += 1
      with_value = _LAUNCHER_OPTIONS_WITH_VALUE.get(name, set())
      while index < len(words) and words[index].startswith('-'):
        index += 2 if words[index] in with_value else 1
      index += _LAUNCHERS[name]
    elif name in _INTERPRETERS and index + 1 < len(words) and words[index + 1].endswith(
        _SCRIPT_SUFFIXES):
      index += 1
    else:
      break
  if index >= len(words):
    return None
  raw = words[index]
  program = os.path.basename(raw)
  for suffix in _SCRIPT_SUFFIXES:
    if program.endswith(suffix):
      program = program[:-len(suffix)]
  return Segment(program, tuple(words[index + 1:]), raw)


def quote(words) -> str:
  return ' '.join(shlex.quote(w) for w in words)
