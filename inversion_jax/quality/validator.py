"""Static command validator: does a command do the task, by the tool's own documentation?

`validate(tool, task, command)` parses the command with `shlex` (never runs it), finds
the segment that invokes the tool (through `sudo`, pipes and redirections), reads its
arguments with the tool's option parser rules (`options.py`, from `specs/<tool>.json`)
and checks it against the task. A tool with variants (netcat: OpenBSD, traditional) is
checked against each and the best verdict is kept.

Reasons (one vocabulary, `REASONS`):
  not_a_command          empty, prose or markdown instead of a command
  wrong_tool             a command, but not of the task's tool
  shell_syntax           unbalanced quotes, a dangling pipe or redirection
  unknown_option         an option the tool does not document
  missing_value          an option without its argument (or one of the wrong shape)
  duplicate_option       a non-repeatable option, or the same positional, given twice
  contradictory_options  options the documentation says exclude each other, or one
                         option given two different values
  missing_required       a documented requirement is unmet (hydra: a login source and
                         a password source; gobuster: a mode; masscan: ports)
  wrong_value            a host, port, path, user, service, rate or version that the
                         task did not name, where the task names one of that kind
  echo_task              three or more consecutive words of the task pasted in
  missing_target         a host, CIDR or URL the task names is absent
  missing_value_of_task  another value the task names (port, wordlist, user, service,
                         software, version, rate, ...) is absent
  intent_missing         none of the intent's option sets is present in full

Graded quality, from a fixed list of checks (`REQUIREMENT_CHECKS`, `CORRECTNESS_CHECKS`):
  0 when the text is not a command of the task's tool (not_a_command, wrong_tool);
  otherwise  R x C, where
    R = the fraction passed of the requirement checks that apply to the task:
        target (missing_target), task_values (missing_value_of_task), intent
        (intent_missing) -- what the task asks for; a check applies when the task names
        a target / other values / has intent options;
    C = the fraction passed of the 8 correctness checks: shell_syntax, known_options
        (unknown_option), option_values (missing_value), no_duplicates
        (duplicate_option), no_contradictions (contradictory_options), required_options
        (missing_required), right_values (wrong_value), no_echo (echo_task).
  The product, not a plain fraction, because a fraction of error checks rewards the
  collapse the loop produces: `nmap 10.2.0.100` has no errors at all. Under R x C a bare
  `tool <host>` for a task that asks for more scores at most 1/2, a wrong host 0.
Strict `ok` = no reason at all.

When no intent options are given they are inferred from the task text by the spec's
documented keyword rules (`intents.<name>.keywords`); when no values are given they are
read from the text by `task_values.extract`.
"""

import dataclasses
import re
import shlex

from inversion_jax.errors import UserError
from inversion_jax.quality import options as options_lib
from inversion_jax.quality import shell
from inversion_jax.quality import specs as specs_lib
from inversion_jax.quality import task_values

REASONS = ('not_a_command', 'wrong_tool', 'shell_syntax', 'unknown_option', 'missing_value',
           'duplicate_option', 'contradictory_options', 'missing_required', 'wrong_value',
           'echo_task', 'missing_target', 'missing_value_of_task', 'intent_missing')
REQUIREMENT_CHECKS = {'target': 'missing_target', 'task_values': 'missing_value_of_task',
                      'intent': 'intent_missing'}
CORRECTNESS_CHECKS = {'shell_syntax': 'shell_syntax', 'known_options': 'unknown_option',
                      'option_values': 'missing_value', 'no_duplicates': 'duplicate_option',
                      'no_contradictions': 'contradictory_options',
                      'required_options': 'missing_required', 'right_values': 'wrong_value',
                      'no_echo': 'echo_task'}
TARGET_ROLES = ('host', 'cidr', 'url')
# Roles whose option values must equal the task's value of the same role, when it names one.
_MATCHED_ROLES = ('wordlist', 'userlist', 'passlist', 'combolist', 'user', 'password',
                  'rate', 'top_n', 'timing', 'service', 'domain', 'input')
_LOCAL_HOSTS = ('127.0.0.1', 'localhost', '0.0.0.0', '::', '::1')
NON_ANSWERS = {'n/a', 'na', 'none', 'null', 'nil', 'unknown', '-', '...', 'todo', 'tbd'}
ENGLISH = frozenset('''a an the to use using run running type execute here this that these
you your we i it is are be can will should would could first then next now try please
command commands following sure certainly okay ok note answer task tool scan scanning find
check look search perform do does let lets so for of on in with and or but if as by from
at which what how why when where who all any some each one two three into about not no
yes there their them they my me our its has have had was were been being also just only
make sure want need like following example output result results shell bash code step
steps description explanation sorry cannot unable well open ports port host target
server network list'''.split())


@dataclasses.dataclass(frozen=True)
class Verdict:
  """What the validator found: strict pass, graded quality, reasons and the checks."""

  ok: bool
  quality: float
  reasons: list[str]
  checks: dict[str, bool | None]  # Check name -> passed (None: does not apply).
  details: list[str]  # Human-readable: which option, which value.
  variant: str | None = None
  # Counts for the gaming indicators: options written, unknown ones, repeated ones.
  stats: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {'ok': self.ok, 'quality': round(self.quality, 6), 'reasons': list(self.reasons)}


def _verdict(reasons: set[str], checks: dict, details: list[str], variant=None,
             stats=None) -> Verdict:
  ordered = [r for r in REASONS if r in reasons]
  stats = stats or {'options': 0, 'unknown': 0, 'repeated': 0}
  if 'not_a_command' in reasons or 'wrong_tool' in reasons:
    return Verdict(False, 0.0, ordered, checks, details, variant, stats)
  applicable = [checks[name] for name in REQUIREMENT_CHECKS if checks.get(name) is not None]
  requirement = sum(applicable) / len(applicable) if applicable else 1.0
  correctness = sum(bool(checks[name]) for name in CORRECTNESS_CHECKS) / len(CORRECTNESS_CHECKS)
  return Verdict(not ordered, requirement * correctness, ordered, checks, details, variant,
                 stats)


def validate(tool: str, task: str, command: str, intent_options=None, values=None,
             spec_dir: str | None = None) -> Verdict:
  """Checks `command` for `task` with `tool`; see the module docstring.

  Args:
    tool: the task bank's tool name (an unknown tool is a UserError).
    task: the task text.
    command: the command line (text; never executed).
    intent_options: alternatives, each a list of options that must all appear; None =
      infer from the task text; [] = the intent needs no option.
    values: role -> value(s) the task names; None = read them from the task text.
  """
  variants = specs_lib.get(tool, spec_dir)
  binaries = specs_lib.all_binaries(spec_dir)
  wanted = task_values.normalise(values) if values is not None else task_values.extract(task)
  gate = _gate(command, variants, binaries)
  if isinstance(gate, Verdict):
    return gate
  segment, syntax_ok, syntax_detail, context = gate
  verdicts = [_check(spec, task, segment, syntax_ok, syntax_detail, intent_options, wanted,
                     context) for spec in variants]
  return max(verdicts, key=lambda v: (v.quality, -len(v.reasons)))


def _gate(command: str, variants, binaries):
  """The tool's segment (with shell-syntax status), or a failing Verdict."""
  text = (command or '').strip()
  details = []
  if not text:
    return _verdict({'not_a_command'}, {}, ['empty command'])
  if '```' in text or re.match(r'^(#{1,6}\s|[*+-]\s|\d+[.)]\s|>\s|\*\*|__)', text):
    return _verdict({'not_a_command'}, {}, ['markdown, not a command'])
  if text.lower().rstrip('.') in NON_ANSWERS:
    return _verdict({'not_a_command'}, {}, ['no command given'])
  syntax_ok = True
  try:
    segments = shell.segments(text)
    shell.check_balanced(text)
  except shell.ShellSyntaxError as error:
    syntax_ok, details = False, [f'shell syntax: {error}']
    segments = _fallback_segments(text)
  own = {b for spec in variants for b in spec.binaries}
  for segment in segments:
    if segment.program in own:
      # Files the line writes or reads (`> out.txt`, `| tee out.txt`) carry task values too.
      context = [w for s in segments for w in s.redirects + ((s.program,) + s.args
                                                             if s is not segment else ())]
      return segment, syntax_ok, details, context
  first = segments[0] if segments else None
  if first is None or _is_prose(first, text):
    return _verdict({'not_a_command'}, {}, details + ['prose, not a command'])
  other = binaries.get(first.program)
  return _verdict({'wrong_tool'}, {}, details + [
      f'runs {first.program!r}' + (f' ({other})' if other else '') + ', not the task\'s tool'])


def _fallback_segments(text: str):
  """Best-effort words when the shell would reject the line (unbalanced quotes)."""
  words = [w.strip('\'"') for w in re.split(r'\s+|(?<=\s)\|(?=\s)', text) if w.strip('\'"')]
  groups, current = [], []
  for word in words:
    if word in shell.SEPARATORS:
      groups.append(current)
      current = []
    else:
      current.append(word)
  groups.append(current)
  return [s for s in (shell.unwrap(g) for g in groups if g) if s is not None]


def _is_prose(segment: shell.Segment, text: str) -> bool:
  first = segment.raw_program
  if not re.fullmatch(r'[\w./+-]+', first) or (first[:1].isupper() and '/' not in first):
    return True  # Program names are lower-case words or paths; 'Nmap:' or '**x' is prose.
  if first.endswith(':') or first[:1].isupper() and first.lower() in ENGLISH:
    return True
  if first.lower() in ENGLISH:
    return True
  words = re.findall(r'[A-Za-z]+', text)
  return len(words) >= 5 and sum(w.lower() in ENGLISH for w in words) / len(words) > 0.6


def _check(spec, task, segment, syntax_ok, syntax_detail, intent_options, wanted,
           context=()) -> Verdict:
  parsed = options_lib.parse(spec, segment.args)
  reasons, details = set(), list(syntax_detail)
  checks = {name: True for name in CORRECTNESS_CHECKS}
  if not syntax_ok:
    checks['shell_syntax'] = False
  if _prose_arguments(parsed):
    return _verdict({'not_a_command'}, {}, details + ['prose after the program name'],
                    spec.variant)

  def fail(check, detail):
    checks[check] = False
    details.append(detail)

  for word in parsed.unknown:
    fail('known_options', f'unknown option {word!r} for {spec.label}')
  for word in parsed.missing_values:
    fail('option_values', f'option {word!r} needs a value')
  for word in parsed.bad_values:
    fail('option_values', f'value of {word!r} has the wrong form')
  _check_duplicates(parsed, fail)
  _check_exclusive(spec, parsed, fail)
  _check_required(spec, parsed, fail)
  words = _value_words(parsed)
  _check_wrong_values(spec, parsed, words, wanted, fail)
  if _echoes(task, parsed, wanted, spec):
    fail('no_echo', 'task text pasted into the command')

  targets = [(r, v) for r in TARGET_ROLES for v in wanted.get(r, ())]
  carried = carried_roles(spec)
  others = [(r, v) for r, vs in wanted.items() if r not in TARGET_ROLES and r != 'output'
            and r in carried for v in vs]
  others += [('output', v) for v in wanted.get('output', ())]
  checks['target'] = _all_present(targets, words, 'target', details) if targets else None
  checks['task_values'] = (_all_present(others, words + list(context), 'value', details)
                           if others else None)
  alternatives = _intent_alternatives(spec, task, intent_options)
  if alternatives:
    checks['intent'] = any(_has_all(spec, parsed, alt) for alt in alternatives)
    if not checks['intent']:
      details.append('intent options missing: ' + ' or '.join(' '.join(a) for a in alternatives))
  else:
    checks['intent'] = None
  for name, reason in {**REQUIREMENT_CHECKS, **CORRECTNESS_CHECKS}.items():
    if checks.get(name) is False:
      reasons.add(reason)
  canonicals = parsed.canonicals()
  stats = {'options': len(parsed.options) + len(parsed.unknown), 'unknown': len(parsed.unknown),
           'repeated': len(canonicals) - len(set(canonicals))}
  return _verdict(reasons, checks, details, spec.variant, stats)


# Values any command can carry: targets, ports, files (a redirection writes any output).
ALWAYS_CARRIED = {'host', 'cidr', 'url', 'port', 'ports', 'wordlist', 'userlist', 'passlist',
                  'combolist', 'output', 'input'}


def carried_roles(spec) -> set[str]:
  """Roles of task values this tool can take: the spec's option roles and positional kinds.

  A value of another role is context, not a requirement: the service `memcached` in
  "talk to the memcached server at 10.0.0.5 port 11211" is not an argument of `nc`.
  A user and a password travel together (`-id user:pass`).
  """
  roles = set(ALWAYS_CARRIED) | set(spec.positional_kinds)
  roles |= {o.role for mode in (None, *spec.modes) for o in spec.options_for(mode) if o.role}
  if roles & {'user', 'password'}:
    roles |= {'user', 'password'}
  if 'ports' in roles or any('port' in kind for kind in spec.positional_kinds):
    roles.add('port')
  return roles


def _prose_arguments(parsed) -> bool:
  words = [w for w in parsed.positionals if re.fullmatch(r'[A-Za-z]+[,.]?', w)]
  return (len(words) >= 4 and not parsed.options and
          sum(w.lower().strip(',.') in ENGLISH for w in words) / len(words) >= 0.6)


def _check_duplicates(parsed, fail):
  seen: dict[str, list] = {}
  for occurrence in parsed.options:
    seen.setdefault(occurrence.spec.canonical, []).append(occurrence)
  for canonical, occurrences in seen.items():
    if len(occurrences) > 1 and not occurrences[0].spec.repeatable:
      fail('no_duplicates', f'{canonical} given {len(occurrences)} times')
      values = {o.value for o in occurrences if o.value is not None}
      if len(values) > 1:
        fail('no_contradictions', f'{canonical} given different values {sorted(values)}')
  positionals = [p.lower() for p in parsed.positionals]
  for word in sorted(set(positionals)):
    if positionals.count(word) > 1:
      fail('no_duplicates', f'argument {word!r} given {positionals.count(word)} times')


def _check_exclusive(spec, parsed, fail):
  groups = spec.exclusive + (spec.modes[parsed.mode].exclusive if parsed.mode else ())
  present = set(parsed.canonicals())
  table = options_lib.OptionTable(spec, parsed.mode)
  for group in groups:
    names = {_canonical(table, name) for name in group.options}
    hit = sorted(n for n in names if n in present)
    if len(hit) > 1:
      fail('no_contradictions', f'{" and ".join(hit)} exclude each other'
           + (f' ({group.doc})' if group.doc else ''))


def _canonical(table, name: str) -> str:
  option = table.exact(name)
  return option.canonical if option else name


def _check_required(spec, parsed, fail):
  if spec.mode_required and parsed.mode is None:
    fail('required_options', f'{spec.tool} needs a mode first: {", ".join(spec.modes)}')
  requirements = spec.required + (spec.modes[parsed.mode].required if parsed.mode else ())
  for requirement in requirements:
    if requirement.unless_positional and any(
        re.search(pattern, word, re.IGNORECASE) for pattern in requirement.unless_positional
        for word in parsed.positionals):
      continue
    if not any(_has_all(spec, parsed, alt) for alt in requirement.any_of):
      fail('required_options', 'missing ' + (requirement.doc or ' or '.join(
          ' '.join(a) for a in requirement.any_of)))
  if len(parsed.positionals) < spec.min_positionals and not spec.required:
    fail('required_options', f'{spec.tool} needs {spec.min_positionals} positional argument(s)')


def _has_all(spec, parsed, alternative) -> bool:
  return all(_has_option(spec, parsed, word) for word in alternative)


def _has_option(spec, parsed, word: str) -> bool:
  """Whether the parsed command has option `word` ('-sV', '-T4', 'dir', '@positional')."""
  if word == specs_lib.POSITIONAL:
    return bool(parsed.positionals)
  if word in spec.modes:
    return parsed.mode == word
  try:
    wanted = options_lib.parse(spec, ([parsed.mode] if parsed.mode else []) + shlex.split(word))
  except ValueError:
    return word in parsed.canonicals()
  if wanted.unknown or not wanted.options:
    return any(o.written == word for o in parsed.options) or word in parsed.positionals
  for occurrence in wanted.options:
    value = occurrence.value.lower() if occurrence.value else None
    if not any(o.spec.canonical == occurrence.spec.canonical and
               (value is None or (o.value or '').lower() == value) for o in parsed.options):
      return False
  return True


def _value_words(parsed) -> list[str]:
  return [o.value for o in parsed.options if o.value] + list(parsed.positionals)


def _all_present(items, words, kind, details) -> bool:
  missing = [v for role, v in items if not task_values.present(role, v, words)]
  for value in missing:
    details.append(f'{kind} {value!r} from the task is absent')
  return not missing


def _check_wrong_values(spec, parsed, words, wanted, fail):
  task_hosts = {task_values.host_of(v) for r in TARGET_ROLES for v in wanted.get(r, ())}
  task_hosts |= {task_values.host_of(h) for r in TARGET_ROLES for v in wanted.get(r, ())
                 for h in task_values.hosts_in(v)}  # The ends of a range a-b.
  task_hosts |= {v.lower() for v in wanted.get('domain', ())}
  outputs = {o.value for o in parsed.options if o.value and o.spec.role in ('output',)}
  for word in words:
    if word in outputs:
      continue
    for host in task_values.hosts_in(word):
      name = task_values.host_of(host)
      if name in task_hosts or any(name.endswith('.' + h) or h.endswith('.' + name)
                                   for h in task_hosts):
        continue
      if not task_hosts and name in _LOCAL_HOSTS:
        continue
      fail('right_values', f'{host!r} is not a target of the task')
  _check_urls(words, wanted, outputs, fail)
  _check_paths(spec, parsed, wanted, outputs, fail)
  ports = set(wanted.get('port', ()))
  if ports:
    for occurrence in parsed.options:
      if occurrence.spec.role in ('port', 'ports') and occurrence.value:
        _check_ports(occurrence.value, ports, fail)
    if any('port' in kind for kind in spec.positional_kinds):
      for word in parsed.positionals:
        if re.fullmatch(r'\d{1,5}(-\d{1,5})?', word):
          _check_ports(word, ports, fail)
    for word in words:
      for port in re.findall(r'(?<=[\w\]]):(\d{1,5})\b', word):
        if port not in ports:
          fail('right_values', f'port {port} is not a port of the task')
  for occurrence in parsed.options:
    role = occurrence.spec.role
    if role in _MATCHED_ROLES and occurrence.value and wanted.get(role):
      if not any(task_values.present(role, v, [occurrence.value]) for v in wanted[role]):
        fail('right_values', f'{occurrence.written} {occurrence.value!r} is not the task\'s '
             f'{role} ({", ".join(wanted[role])})')
  if wanted.get('service'):
    services = {s.lower() for s in wanted['service']}
    for word in parsed.positionals:
      scheme = re.match(r'^([a-z][\w-]*)://', word.lower())
      name = scheme.group(1) if scheme else word.lower()
      if name in task_values.SERVICES and not _same_service(name, services):
        fail('right_values', f'service {name!r} is not the task\'s ({", ".join(services)})')
  if wanted.get('version'):
    for word in parsed.positionals:
      if re.fullmatch(r'v?\d+(\.\d+)+[a-z]?\d*', word, re.I) and not any(
          word.lower().lstrip('v') == v.lower().lstrip('v') for v in wanted['version']):
        fail('right_values', f'version {word!r} is not the task\'s')


def _check_urls(words, wanted, outputs, fail):
  """A URL on a task host that is not the task's URL (another path or query) is wrong."""
  urls = [u.rstrip('/').lower() for u in wanted.get('url', ())]
  if not urls or not any(re.search(r'://[^/]+/.', u) for u in urls):
    return
  bare = {re.sub(r'^https?://', '', u) for u in urls}
  for word in words:
    if word in outputs:
      continue
    for url in task_values.URL.findall(word):
      url = url.rstrip('/.,').lower()
      if re.sub(r'^https?://', '', url) not in bare and task_values.host_of(url) in {
          task_values.host_of(u) for u in urls}:
        fail('right_values', f'URL {url!r} is not the task\'s ({", ".join(urls)})')


_INPUT_PATH_ROLES = ('wordlist', 'userlist', 'passlist', 'combolist', 'input')


def _check_paths(spec, parsed, wanted, outputs, fail):
  """An input file (wordlist, user or password list) the task did not name, when it names one."""
  named = {v for role in _INPUT_PATH_ROLES for v in wanted.get(role, ())}
  if not named:
    return
  candidates = [o.value for o in parsed.options if o.value and o.spec.role in _INPUT_PATH_ROLES]
  candidates += [w for w in parsed.positionals
                 if re.search(r'/|\.(txt|lst|dic|csv)$', w) and '://' not in w]
  for path in candidates:
    if path in outputs:
      continue
    pieces = path.split(',')
    for piece in pieces:
      if piece and not any(piece == v or piece.endswith('/' + v) or v.endswith('/' + piece)
                           for v in named):
        fail('right_values', f'file {piece!r} is not one the task names ({", ".join(named)})')


def _same_service(name: str, services: set[str]) -> bool:
  aliases = {'postgresql': 'postgres', 'http-get': 'http', 'https-get': 'https'}
  name = aliases.get(name, name)
  return any(aliases.get(s, s) == name or s.startswith(name) or name.startswith(s)
             for s in services)


def _check_ports(value: str, ports: set[str], fail):
  """Ports or ranges the command names must be the task's (a task range may be written)."""
  if value in ('-',):
    fail('right_values', 'all ports (-p-) where the task names ports')
    return
  ranges = [tuple(map(int, p.split('-'))) for p in ports if '-' in p]
  for low, high in re.findall(r'(\d{1,5})(?:-(\d{1,5}))?', value):
    if high:
      if f'{low}-{high}' not in ports:
        fail('right_values', f'port range {low}-{high} where the task names {sorted(ports)}')
    elif low not in ports and not any(a <= int(low) <= b for a, b in ranges):
      fail('right_values', f'port {low} is not a port of the task')


def _words_of(text: str) -> list[str]:
  return re.findall(r'[a-z0-9]+', text.lower())


def _echoes(task, parsed, wanted, spec) -> bool:
  """Three or more consecutive task words (not its values) among the arguments."""
  value_words = {w for vs in wanted.values() for v in vs for w in _words_of(v)}
  value_words |= {w for b in spec.binaries for w in _words_of(b)} | set(_words_of(spec.tool))
  task_words = _words_of(task)
  args = _words_of(' '.join(parsed.positionals + [o.value or '' for o in parsed.options]))
  if len(args) < 3:
    return False
  task_set = set(task_words) - value_words
  for word in parsed.positionals + [o.value or '' for o in parsed.options]:
    pieces = _words_of(word)
    if len(word.split()) >= 4 and sum(p in task_set for p in pieces) >= 3:
      return True  # The task (or most of it) pasted as one quoted argument.
  joined = ' ' + ' '.join(args) + ' '
  for start in range(len(task_words) - 2):
    run = task_words[start:start + 3]
    if any(w in value_words or w.isdigit() for w in run):
      continue
    if ' ' + ' '.join(run) + ' ' in joined:
      return True
  return False


def _intent_alternatives(spec, task, intent_options):
  """The option alternatives the task's intent needs (given, or from keyword rules)."""
  if intent_options is not None:
    return [tuple(alt) for alt in intent_options if alt]
  text = task.lower()
  product = [()]
  for intent in spec.intents.values():
    if intent.options and any(re.search(pattern, text) for pattern in intent.keywords):
      product = [a + tuple(b) for a in product for b in intent.options]
  return [alt for alt in product if alt]


def check_tool(tool: str, spec_dir: str | None = None) -> None:
  """Raises UserError for a tool without a spec (for CLIs that validate input early)."""
  specs_lib.get(tool, spec_dir)


__all__ = ['validate', 'Verdict', 'REASONS', 'REQUIREMENT_CHECKS', 'CORRECTNESS_CHECKS',
           'UserError', 'check_tool']
