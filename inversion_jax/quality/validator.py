"""Static command validator: does a command do the task, by the tool's own documentation?

`validate(tool, task, command)` parses the command with `shlex` (never runs it), finds
the segment that invokes the tool (through `sudo`, pipes and redirections), reads its
arguments with the tool's option parser rules (`options.py`, from `specs/<tool>.json`)
and checks it against the task. A tool with variants (netcat: OpenBSD, traditional) is
checked against each and the best verdict is kept.

Reasons (one vocabulary, `REASONS`):
  not_a_command          empty, prose or markdown instead of a command
  wrong_tool             a command, but not of the task's tool
  extra_command          another command chained to the tool's (`; rm -rf /`, `&& curl ..`,
                         `| sh`) that the task does not ask for; text filters and sources in
                         a pipeline with the tool (`echo .. | nc`, `| tee out.txt`, `| grep`)
                         are data plumbing, not extra commands
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
  echo_task              three or more consecutive words of the task pasted in as
                         arguments (an option's own value is a value, not an echo)
  missing_target         a host, CIDR or URL the task names is absent
  missing_value_of_task  another value the task names (port, wordlist, user, service,
                         software, version, rate, ...) is absent
  intent_missing         none of the intent's option sets is present in full

Every segment of the line that runs the tool is read (`nc -l -p 8080 | nc host 80`):
each must be correct on its own, and the task's values and intent may be met by any.

Graded quality: how much of the task the command does, discounted for what it does wrong.
  0 when the text is not a command of the task's tool (not_a_command, wrong_tool);
  otherwise  R x C x E, where
    R = what the task asks for, done: V = the fraction of the task's values (its targets
        and other values) present; I = the intent's coverage, the largest fraction of one
        of its option sets present. R = 1/4 V + 3/4 I when the task has an intent (the
        options are what the task asks the tool to do; the values say what to do it to),
        R = V when it has none, 1 when it has neither;
    C = the fraction passed of the 9 correctness checks (`CORRECTNESS_CHECKS`): shell
        syntax, single command, known options, option values, no duplicates, no
        contradictions, required options, right values, no echo;
    E = economy: 1 - 0.1 per documented option the task does not ask for beyond the
        first two (floor 0.5). Such options are not errors (strict ignores them), but
        flag spam is how a loop games a reconstruction score.
  Missing what the task asks costs at least as much as writing something wrong: a bare
  `tool <target> <values>` for a task with an intent scores at most 1/4, less than the
  right command with one wrong value (R >= 3/4, C = 8/9). Strict `ok` = no reason at all.

When no intent options are given they are inferred from the task text by the spec's
documented keyword rules (`intents.<name>.keywords`), read on the task with its values
masked (a path's words are not keywords) and not where a negation governs the keyword
("without host discovery" asks for no discovery), not where an `unless` rule says the
word plays another role, and satisfied by nothing where a `default` rule says the tool
does it by default. When no values are given they are read from the text by
`task_values.extract`.
"""

import dataclasses
import re
import shlex

from inversion_jax.errors import UserError
from inversion_jax.quality import options as options_lib
from inversion_jax.quality import shell
from inversion_jax.quality import specs as specs_lib
from inversion_jax.quality import task_values

REASONS = ('not_a_command', 'wrong_tool', 'extra_command', 'shell_syntax', 'unknown_option', 'missing_value',
           'duplicate_option', 'contradictory_options', 'missing_required', 'wrong_value',
           'echo_task', 'missing_target', 'missing_value_of_task', 'intent_missing')
REQUIREMENT_CHECKS = {'target': 'missing_target', 'task_values': 'missing_value_of_task',
                      'intent': 'intent_missing'}
CORRECTNESS_CHECKS = {'shell_syntax': 'shell_syntax', 'single_command': 'extra_command',
                      'known_options': 'unknown_option',
                      'option_values': 'missing_value', 'no_duplicates': 'duplicate_option',
                      'no_contradictions': 'contradictory_options',
                      'required_options': 'missing_required', 'right_values': 'wrong_value',
                      'no_echo': 'echo_task'}
TARGET_ROLES = ('host', 'cidr', 'url')
INTENT_WEIGHT = 0.75  # Share of R carried by the intent options (see the module docstring).
EXCESS_ALLOWANCE, EXCESS_STEP, EXCESS_FLOOR = 2, 0.1, 0.5
# Programs that only move text in a pipeline with the tool: their segments are plumbing.
PIPE_COMPANIONS = frozenset('''cat echo printf tee grep egrep fgrep head tail sort uniq cut tr
wc less more awk sed column jq base64 xxd nl fold paste'''.split())
_NEGATION = re.compile(r"\b(?:no|not|without|never|skip(?:ping)?|avoid(?:ing)?|don'?t|"
                       r"do not)\s+(?:[\w-]+\s+){0,2}$")
_MASKED_ROLES = ('url', 'cidr', 'host', 'domain', 'wordlist', 'userlist', 'passlist',
                 'combolist', 'output', 'input')
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
_REQUEST_WORDS = (ENGLISH | {'whether', 'known', 'exploit', 'exploits', 'vulnerability',
                                'vulnerabilities', 'public', 'available'}) - {
                                    'server', 'network', 'host', 'target', 'port', 'ports',
                                    'list', 'code', 'shell', 'output', 'open'}


@dataclasses.dataclass(frozen=True)
class Verdict:
  """What the validator found: strict pass, graded quality, reasons and the checks."""

  ok: bool
  quality: float
  reasons: list[str]
  checks: dict[str, bool | None]  # Check name -> passed (None: does not apply).
  details: list[str]  # Human-readable: which option, which value.
  variant: str | None = None
  # Counts for the gaming indicators: options written, unknown ones, repeated ones, and
  # documented ones the task did not ask for (`excess`).
  stats: dict = dataclasses.field(default_factory=dict)
  # The graded score's factors: values (V), intent (I), requirement (R), correctness (C),
  # economy (E); empty when the text is not a command of the tool.
  parts: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> dict:
    return {'ok': self.ok, 'quality': round(self.quality, 6), 'reasons': list(self.reasons)}


def _verdict(reasons: set[str], checks: dict, details: list[str], variant=None,
             stats=None, coverage=None) -> Verdict:
  ordered = [r for r in REASONS if r in reasons]
  stats = stats or {'options': 0, 'unknown': 0, 'repeated': 0, 'excess': 0}
  if 'not_a_command' in reasons or 'wrong_tool' in reasons:
    return Verdict(False, 0.0, ordered, checks, details, variant, stats)
  values, intent = coverage if coverage is not None else (None, None)
  parts = graded_parts(values, intent, checks, stats.get('excess', 0))
  return Verdict(not ordered, parts['R'] * parts['C'] * parts['E'], ordered, checks, details,
                 variant, stats, parts)


def graded_parts(values: float | None, intent: float | None, checks: dict,
                 excess: int) -> dict:
  """The factors of graded quality (module docstring); None = the task asks none."""
  if intent is None:
    requirement = 1.0 if values is None else values
  else:
    requirement = (1 - INTENT_WEIGHT) * (1.0 if values is None else values) + (
        INTENT_WEIGHT * intent)
  correctness = sum(bool(checks.get(name, True)) for name in CORRECTNESS_CHECKS) / len(
      CORRECTNESS_CHECKS)
  economy = max(EXCESS_FLOOR, 1 - EXCESS_STEP * max(0, excess - EXCESS_ALLOWANCE))
  return {'V': values, 'I': intent, 'R': requirement, 'C': correctness, 'E': economy}


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
  segments, syntax_ok, syntax_detail, context, extra = gate
  verdicts = []
  for spec in variants:
    own = [s for s in segments if s.program in spec.binaries]
    if own:
      verdicts.append(_check(spec, task, own, syntax_ok, syntax_detail, intent_options,
                             wanted, context, extra))
  return max(verdicts, key=lambda v: (v.ok, v.quality, -len(v.reasons)))


def _gate(command: str, variants, binaries):
  """The tool's segments, syntax status, context words and extra commands; or a Verdict."""
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
  own_binaries = {b for spec in variants for b in spec.binaries}
  own = [s for s in segments if s.program in own_binaries]
  if own:
    # Files the line writes or reads (`> out.txt`, `| tee out.txt`) carry task values too.
    context = [w for s in segments for w in s.redirects + ((s.program,) + s.args
                                                           if s not in own else ())]
    return own, syntax_ok, details, context, _extra_commands(segments, own_binaries)
  first = segments[0] if segments else None
  if first is None or _is_prose(first, text):
    return _verdict({'not_a_command'}, {}, details + ['prose, not a command'])
  other = binaries.get(first.program)
  return _verdict({'wrong_tool'}, {}, details + [
      f'runs {first.program!r}' + (f' ({other})' if other else '') + ', not the task\'s tool'])


def _extra_commands(segments, own_binaries) -> list[str]:
  """Programs chained to the tool that are neither the tool nor pipeline text plumbing."""
  extra = []
  for index, segment in enumerate(segments):
    if segment.program in own_binaries:
      continue
    piped = segment.joined_by == '|' or (
        index + 1 < len(segments) and segments[index + 1].joined_by == '|')
    if not (piped and segment.program in PIPE_COMPANIONS):
      extra.append(segment.program)
  return extra


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


def _check(spec, task, segments, syntax_ok, syntax_detail, intent_options, wanted,
           context=(), extra=()) -> Verdict:
  parsed_all = [options_lib.parse(spec, segment.args) for segment in segments]
  reasons, details = set(), list(syntax_detail)
  checks = {name: True for name in CORRECTNESS_CHECKS}
  if not syntax_ok:
    checks['shell_syntax'] = False
  if any(_prose_arguments(parsed) for parsed in parsed_all):
    return _verdict({'not_a_command'}, {}, details + ['prose after the program name'],
                    spec.variant)

  def fail(check, detail):
    checks[check] = False
    details.append(detail)

  for program in extra:
    fail('single_command', f'runs {program!r} besides {spec.tool}')
  words = []
  for parsed in parsed_all:
    for word in parsed.unknown:
      fail('known_options', f'unknown option {word!r} for {spec.label}')
    for word in parsed.missing_values:
      fail('option_values', f'option {word!r} needs a value')
    for word in parsed.bad_values:
      fail('option_values', f'value of {word!r} has the wrong form')
    _check_duplicates(parsed, fail)
    _check_exclusive(spec, parsed, fail)
    _check_required(spec, parsed, fail)
    segment_words = _value_words(parsed)
    _check_wrong_values(spec, parsed, segment_words, wanted, fail)
    if _echoes(task, parsed, wanted, spec):
      fail('no_echo', 'task text pasted into the command')
    words += segment_words

  alternatives, defaulted = _intent_alternatives(spec, task, intent_options, wanted)
  targets = [(r, v) for r in TARGET_ROLES for v in wanted.get(r, ())]
  carried = carried_roles(spec)
  others = [(r, v) for r, vs in wanted.items() if r not in TARGET_ROLES and r != 'output'
            and r in carried and r not in defaulted for v in vs]
  others += [('output', v) for v in wanted.get('output', ())]
  found_targets = _present(targets, words, 'target', details)
  found_others = _present(others, words + list(context), 'value', details)
  checks['target'] = found_targets == len(targets) if targets else None
  checks['task_values'] = found_others == len(others) if others else None
  values = ((found_targets + found_others) / (len(targets) + len(others))
            if targets or others else None)
  redirected = any(task_values.present('output', v, context) for v in wanted.get('output', ()))
  if alternatives:
    intent = max(_coverage(spec, parsed, alt, redirected) for alt in alternatives
                 for parsed in parsed_all)
    checks['intent'] = intent == 1
    if not checks['intent']:
      details.append('intent options missing: ' + ' or '.join(' '.join(a) for a in alternatives))
  else:
    intent, checks['intent'] = None, None
  for name, reason in {**REQUIREMENT_CHECKS, **CORRECTNESS_CHECKS}.items():
    if checks.get(name) is False:
      reasons.add(reason)
  canonicals = [c for parsed in parsed_all for c in parsed.canonicals()]
  stats = {'options': sum(len(p.options) + len(p.unknown) for p in parsed_all),
           'unknown': sum(len(p.unknown) for p in parsed_all),
           'repeated': len(canonicals) - len(set(canonicals)),
           'excess': _excess(spec, parsed_all, alternatives, wanted)}
  if stats['excess'] > EXCESS_ALLOWANCE:
    details.append(f'{stats["excess"]} options the task does not ask for')
  return _verdict(reasons, checks, details, spec.variant, stats, (values, intent))


def _coverage(spec, parsed, alternative, redirected=False) -> float:
  """The fraction of an intent's option set the parsed command has.

  When the line writes the task's output file by a redirection (`> scan.txt`, `| tee`),
  an output option of the set counts as present: the tool's standard output is its
  report, so the shell does what the option would.
  """
  table = options_lib.OptionTable(spec, parsed.mode)
  def has(word):
    option = table.exact(word)
    return _has_option(spec, parsed, word) or (
        redirected and option is not None and option.role == 'output')
  return sum(has(word) for word in alternative) / len(alternative)


def _excess(spec, parsed_all, alternatives, wanted) -> int:
  """Documented options (distinct) that neither the intent, a requirement nor a value asks."""
  asked = set()
  for parsed in parsed_all:
    table = options_lib.OptionTable(spec, parsed.mode)
    requirements = spec.required + (spec.modes[parsed.mode].required if parsed.mode else ())
    for alternative in list(alternatives) + [a for r in requirements for a in r.any_of]:
      for word in alternative:
        option = table.exact(word) or (table.attached(word) or (None, None))[1]
        if option is not None:
          asked.add(option.canonical)
  task_words = {v.lower() for vs in wanted.values() for v in vs}
  extra = set()
  for parsed in parsed_all:
    for occurrence in parsed.options:
      role = occurrence.spec.role
      carries = (role and (wanted.get(role) or (role == 'ports' and wanted.get('port')))) or (
          occurrence.value and occurrence.value.lower() in task_words)
      if occurrence.spec.canonical not in asked and not carries:
        extra.add(occurrence.spec.canonical)
  return len(extra)


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


def _present(items, words, kind, details) -> int:
  """How many of the (role, value) items occur in the words; the others are noted."""
  missing = [v for role, v in items if not task_values.present(role, v, words)]
  for value in missing:
    details.append(f'{kind} {value!r} from the task is absent')
  return len(items) - len(missing)


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
  if 'path' in spec.positional_kinds:  # The synopsis names a file positional (dirb).
    candidates += [w for w in parsed.positionals if re.search(r'/|\.(txt|lst|dic|csv)$', w)
                   and not task_values.hosts_in(w)]
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
    if not any(r in ports for r in ('1-65535', '0-65535')):
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
  """Task words pasted in: a sentence of the task as one argument, or three consecutive
  task words (not its values) among the positionals.

  An option's value is what the option asks for (`--script "default and safe"`,
  `--data="id=7"`, a User-Agent), so only a value that is a sentence of the task (four
  or more words, three from the task, two of them function or request words) counts. Where
  positionals are free search terms (searchsploit), a run counts only when it is the
  request's own wording (two of its three words are function or request words).
  """
  value_words = {w for vs in wanted.values() for v in vs for w in _words_of(v)}
  value_words |= {w for b in spec.binaries for w in _words_of(b)} | set(_words_of(spec.tool))
  task_words = _words_of(task)
  task_set = set(task_words) - value_words
  for word in parsed.positionals + [o.value or '' for o in parsed.options]:
    pieces = _words_of(word)
    if (len(word.split()) >= 4 and sum(p in task_set for p in pieces) >= 3 and
        sum(p in _REQUEST_WORDS for p in pieces) >= 2):
      return True  # A sentence of the task pasted as one quoted argument.
  free_text = 'string' in spec.positional_kinds and 'word' in spec.positional_kinds
  args = _words_of(' '.join(parsed.positionals))
  if len(args) < 3:
    return False
  joined = ' ' + ' '.join(args) + ' '
  for start in range(len(task_words) - 2):
    run = task_words[start:start + 3]
    if any(w in value_words or w.isdigit() for w in run):
      continue
    if free_text and sum(w in _REQUEST_WORDS for w in run) < 2:
      continue  # Search terms ("apache http server") are words of the task by design.
    if ' ' + ' '.join(run) + ' ' in joined:
      return True
  return False


def _intent_alternatives(spec, task, intent_options, wanted):
  """(option alternatives the task's intent needs, roles its tool defaults cover).

  Given alternatives are used as they are. Otherwise each intent whose keyword matches the
  masked task (not under a negation, not where an `unless` rule matches) contributes its
  option sets, combined across intents; an intent whose `default` rule matches is met
  with no option, and the values of the roles its options carry are not required.
  """
  if intent_options is not None:
    return [tuple(alt) for alt in intent_options if alt], set()
  text = intent_text(task, wanted)
  product, defaulted = [()], set()
  for intent in spec.intents.values():
    if not intent.options or not _fires(intent, text):
      continue
    if any(re.search(pattern, text) for pattern in intent.default):
      defaulted |= {o.role for mode in (None, *spec.modes) for o in spec.options_for(mode)
                    for alt in intent.options for word in alt if word in o.names and o.role}
      continue
    product = [a + tuple(b) for a in product for b in intent.options]
  product = [alt for alt in product if len({w for w in alt if w in spec.modes}) <= 1]
  return [alt for alt in product if alt], defaulted


def _fires(intent, text: str) -> bool:
  if any(re.search(pattern, text) for pattern in intent.unless):
    return False
  for pattern in intent.keywords:
    for match in re.finditer(pattern, text):
      if not _NEGATION.search(text[:match.start()]):
        return True
  return False


def intent_text(task: str, wanted) -> str:
  """The task, lower-cased, with its network targets and file paths masked.

  A path's directory names (`/opt/scripts/`, `wordlists/`) and a host's labels are values,
  not words of the request; a masked path keeps its extension (`file.xml`), which some
  rules read.
  """
  text = task.lower()
  items = sorted(((role, v.lower()) for role in _MASKED_ROLES for v in wanted.get(role, ())),
                 key=lambda item: -len(item[1]))
  for role, value in items:
    if role in TARGET_ROLES or role == 'domain':
      text = text.replace(value, 'target')
    else:
      suffix = re.search(r'\.[a-z0-9]{1,5}$', value)
      text = text.replace(value, 'file' + (suffix.group(0) if suffix else ''))
  return text


def check_tool(tool: str, spec_dir: str | None = None) -> None:
  """Raises UserError for a tool without a spec (for CLIs that validate input early)."""
  specs_lib.get(tool, spec_dir)


__all__ = ['validate', 'Verdict', 'REASONS', 'REQUIREMENT_CHECKS', 'CORRECTNESS_CHECKS',
           'UserError', 'check_tool']
