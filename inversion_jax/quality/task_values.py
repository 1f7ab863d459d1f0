"""The concrete values a task names, and whether a command carries them.

When a task comes without its values (the validator's CLI), they are read from its text
by these documented rules, applied to the text as written:

  url        http:// or https:// up to the next space (trailing punctuation dropped)
  cidr       a.b.c.d/n
  host       an IPv4 address not inside a URL or CIDR; a dotted name ending in a network
             suffix (HOST_SUFFIXES: .local .lan .com .corp ...), not inside a URL
  ports      the numbers after "port"/"ports" ("ports 22, 80 and 443", "port 8443"),
             ranges in words ("ports 1 to 1024", "ports from 0 to 65535" = 1-1024,
             0-65535), and host:port
  wordlist / userlist / passlist / path
             an absolute path, or a file name ending .txt/.lst/.dic; the role comes
             from the word before it (user(name)s -> userlist, password(s) -> passlist,
             otherwise wordlist), "output"/"save"/"write" before it -> output
  user       the word after "user", "username", "login" or "account"
  service    a word from SERVICES (ssh, ftp, rdp, ...) standing alone
  software / version
             a version number (digits and dots, optional letter suffix, not an IPv4)
             and the word before it ("proftpd 1.3.3c")
  rate       the number before "packets per second"/"pps" or after "rate (of)"
  top_n      the number after "top"
  timing     the digit after "timing template", "-T" or "T" ("T4")
  top_n      also "the 50 most common/popular ports"
  extensions ".php and .bak files" -> php, bak
  password   the word after "password" (not "password list/file")
  user       also "password for X", "as X with password"
  port       also a bare number 10-65535 not claimed above, in a task that speaks of
             ports, listeners, services, TCP or UDP, unless a count word surrounds it
             ("top", "rate", "threads", "seconds", "packets", ...)

A value is present in a command when it occurs in one of its words: hosts, URLs and
paths as substrings (a URL also without its scheme, or as its host and path in separate
words), an IPv4 address also inside an octet range (`192.168.1.1-254`), numbers and ports
as whole numbers (`-p5432`, `22,5432`, `host:5432`), names case-insensitively.
"""

import re

HOST_SUFFIXES = ('local', 'lan', 'com', 'org', 'net', 'io', 'corp', 'internal', 'test',
                 'example', 'edu', 'gov', 'htb', 'thm', 'intra', 'home', 'localdomain',
                 'dev', 'co', 'uk', 'de', 'info', 'biz', 'us', 'me', 'app', 'site',
                 'online', 'xyz')
SERVICES = ('ssh', 'ftp', 'ftps', 'telnet', 'smtp', 'smtps', 'pop3', 'pop3s', 'imap',
            'imaps', 'rdp', 'vnc', 'mysql', 'mssql', 'postgres', 'postgresql', 'oracle',
            'smb', 'smb2', 'ldap', 'ldap2', 'ldap3', 'redis', 'snmp', 'http-get',
            'http-post', 'http-post-form', 'https-get', 'https-post-form', 'http-form-post',
            'http-get-form', 'mongodb', 'sip', 'svn', 'teamspeak', 'xmpp', 'irc', 'cvs',
            'rexec', 'rlogin', 'rsh', 'socks5', 'memcached', 'cisco', 'vmauthd')
_IPV4 = r'(?:\d{1,3}\.){3}\d{1,3}'
URL = re.compile(r'https?://[^\s"\'<>]+', re.IGNORECASE)
_CIDR = re.compile(rf'(?<![\w.]){_IPV4}/\d{{1,2}}(?![\w.])')
_IP = re.compile(rf'(?<![\w./]){_IPV4}(?![\w/]|\.\d)')
_HOSTNAME = re.compile(
    r'(?<![\w./@:-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:' + '|'.join(HOST_SUFFIXES) +
    r')(?![\w-]|\.[a-z0-9])', re.IGNORECASE)
_FILE = re.compile(r'\bfile\s+([\w.\-/]+\.[a-z0-9]{1,5})\b', re.IGNORECASE)
_PATH = re.compile(r'(?<![\w:/])(?:/[\w.+\-]+)+/?|(?<![\w/.-])[\w.\-]+\.(?:txt|lst|dic|csv|xml|'
                   r'json|log|gnmap|nmap|req)\b')
_PORTS = re.compile(r'\bports?\s+(?:from\s+)?((?:\d{1,5})(?:\s*(?:,|-|and|&|or|to|through|thru)'
                    r'\s*\d{1,5}(?![\d.]))*)', re.IGNORECASE)
_RANGE_WORDS = re.compile(r'(\d{1,5})\s*(?:to|through|thru)\s*(\d{1,5})', re.IGNORECASE)
_HOST_PORT = re.compile(rf'(?:{_IPV4}|[a-z][\w.-]*\.[a-z]+):(\d{{1,5}})\b', re.IGNORECASE)
_USER = re.compile(r'\b(?:user(?:name)?|login|account)\s+["\']?([\w.\-@]+)', re.IGNORECASE)
_VERSION = re.compile(r'(?<![\w.])([a-z][\w\-]*)\s+(?:version\s+)?v?(\d+(?:\.\d+)+[a-z]?\d*|\d+[a-z]\d*)'
                      r'(?![\w.]*\.\d)', re.IGNORECASE)
_RATE = re.compile(r'\b(\d[\d,]*)\s*(?:packets per second|packets/s|pps)\b|\brate\s+(?:of\s+)?'
                   r'(\d[\d,]*)', re.IGNORECASE)
_TOP = re.compile(r'\btop\s+(\d+)|\b(\d+)\s+most\s+(?:common|popular|used|frequent)',
                  re.IGNORECASE)
_EXTENSIONS = re.compile(r'(?<![\w/.])\.([a-z0-9]{2,5})\b(?![\w.]*\.)', re.IGNORECASE)
_PASSWORD = re.compile(r'\bpassword\s+["\']?([^\s"\',]+)', re.IGNORECASE)
_USER_FOR = re.compile(r'\b(?:password|credentials|login)\s+(?:for|of)\s+(?:the\s+)?(?:user\s+)?'
                       r'([a-z_][\w.\-]*)|\bas\s+(?:user\s+)?([a-z_][\w.\-]*)\s+with\s+password',
                       re.IGNORECASE)
_BARE_NUMBER = re.compile(r'(?<![\w.:/\-])(\d{2,5})(?![\w.:/%\-])')
_NOT_PORT_BEFORE = re.compile(r'(?:top|rate|threads?|level|risk|timeout|delay|first|last|'
                              r'version|of|every|with|at|than|t)\s*$', re.IGNORECASE)
_NOT_PORT_AFTER = re.compile(r'^\s*(?:threads?|seconds?|secs?|ms|milliseconds?|packets?|'
                             r'requests?|tasks?|connections?|minutes?|hours?|%|most|times|'
                             r'characters?|bytes?|pps)\b', re.IGNORECASE)
_PORT_CONTEXT = re.compile(r'\b(?:ports?|listen\w*|tcp|udp|services?)\b', re.IGNORECASE)
_TIMING = re.compile(r'\btiming (?:template|level|profile)?\s*(?:-?t)?(\d)\b|(?<!\w)-?T(\d)\b')
_PATH_ROLE_WORDS = (('userlist', re.compile(r'user(?:name)?s?\b|logins?\b', re.I)),
                    ('passlist', re.compile(r'pass(?:word)?s?\b', re.I)),
                    ('output', re.compile(r'output|save|write|results?|log\b|into\b|to\b', re.I)))
NOT_USER = {'list', 'lists', 'names', 'name', 'from', 'in', 'file', 'with', 'on', 'of', 'for',
            'at', 'to', 'against', 'using', 'the', 'a', 'an', 'and', 'or', 'via', 'over',
            'page', 'form', 'prompt', 'service', 'credentials', 'password', 'passwords', 'as',
            'that', 'this', 'which', 'who', 'is', 'account', 'accounts', 'enumeration', 'by',
            'into', 'is', 'it', 'its', 'their', 'each', 'every', 'any', 'all', 'pairs',
            'combinations', 'and', 'table', 'tables', 'database', 'databases', 'privileges',
            'agent', 'agents'}  # "user agent Mozilla/5.0" names a header, not a user.
NOT_SOFTWARE = {'version', 'port', 'ports', 'ip', 'on', 'of', 'for', 'at', 'v', 'the', 'and',
                'tls', 'http', 'https', 'top'}


def extract(task: str) -> dict[str, list[str]]:
  """Role -> values the task text names, by the rules in the module docstring."""
  values: dict[str, list[str]] = {}

  def add(role, value):
    if value and value not in values.setdefault(role, []):
      values[role].append(value)

  spans = []
  for match in URL.finditer(task):
    url = match.group(0).rstrip('.,;:)\'"')
    add('url', url)
    spans.append((match.start(), match.start() + len(url)))
  inside = lambda m: any(a <= m.start() < b for a, b in spans)
  for match in _CIDR.finditer(task):
    if not inside(match):
      add('cidr', match.group(0))
      spans.append(match.span())
  for match in _IP.finditer(task):
    if not inside(match):
      add('host', match.group(0))
  for match in _HOSTNAME.finditer(task):
    if not inside(match):
      add('host', match.group(0))
  for match in _PATH.finditer(task):
    if inside(match):
      continue
    path = match.group(0).rstrip('.,;:')
    if re.fullmatch(_IPV4 + r'(/\d+)?', path) or '.' not in path and path.count('/') < 2:
      continue
    add(_path_role(task[max(0, match.start() - 40):match.start()].split(), path), path)
  for match in _FILE.finditer(task):
    if not any(match.group(1) in v for vs in values.values() for v in vs):
      add('input', match.group(1))
  for match in _PORTS.finditer(task):
    listed = _RANGE_WORDS.sub(r'\1-\2', match.group(1))  # "ports 1 to 1024" = 1-1024.
    for port in re.findall(r'\d{1,5}-\d{1,5}|\d{1,5}', re.sub(r'\s*-\s*', '-', listed)):
      add('port', port)
  for match in _HOST_PORT.finditer(task):
    if not inside(match):
      add('port', match.group(1))
  for match in _USER.finditer(task):
    if match.group(1).lower() not in NOT_USER:
      add('user', match.group(1))
  for match in _USER_FOR.finditer(task):
    name = match.group(1) or match.group(2)
    if name.lower() not in NOT_USER:
      add('user', name)
  for match in _PASSWORD.finditer(task):
    secret = match.group(1)
    # A literal secret has a digit, a capital or a symbol ("Summer2023"), not "hashes".
    if re.search(r'[\dA-Z\W_]', secret) and not any(secret in v for vs in values.values()
                                                     for v in vs):
      add('password', secret)
  lowered = task.lower()
  for service in SERVICES:
    if re.search(rf'(?<![\w/.-]){re.escape(service)}(?![\w-])', lowered):
      add('service', service)
  for match in _VERSION.finditer(task):
    name, version = match.group(1), match.group(2)
    if re.fullmatch(_IPV4, version) or name.lower() in NOT_SOFTWARE:
      continue
    if any(version in v for vs in values.values() for v in vs):
      continue
    add('software', name)
    add('version', version)
  for match in _RATE.finditer(task):
    add('rate', (match.group(1) or match.group(2)).replace(',', ''))
  for match in _TOP.finditer(task):
    add('top_n', match.group(1) or match.group(2))
  for match in _EXTENSIONS.finditer(task):
    if not inside(match):
      add('extensions', match.group(1).lower())
  if _PORT_CONTEXT.search(task):
    claimed = {v for vs in values.values() for v in vs}
    for match in _BARE_NUMBER.finditer(task):
      number = match.group(1)
      if inside(match) or not 1 <= int(number) <= 65535 or any(
          number in v for v in claimed):
        continue
      if _NOT_PORT_BEFORE.search(task[:match.start()]) or _NOT_PORT_AFTER.match(
          task[match.end():]):
        continue
      add('port', number)
  for match in _TIMING.finditer(task):
    add('timing', match.group(1) or match.group(2))
  return values


def _path_role(before: list[str], path: str) -> str:
  """The nearest of the two words before a path names its role; else the path's name."""
  for word in reversed(before[-2:]):
    for role, pattern in _PATH_ROLE_WORDS:
      if pattern.fullmatch(word.strip(',.:')):
        return role
  name = path.lower().rsplit('/', 1)[-1]
  if 'pass' in name or 'rockyou' in name:
    return 'passlist'
  if 'user' in name or 'names' in name:
    return 'userlist'
  return 'wordlist'


def normalise(values: dict | None) -> dict[str, list[str]]:
  """Role -> list of strings, from a record's `values` (single values or lists)."""
  out = {}
  for role, value in (values or {}).items():
    items = value if isinstance(value, (list, tuple)) else [value]
    items = [str(v) for v in items if v is not None and str(v) != '']
    if role == 'ports':
      role, items = 'port', [p for v in items for p in re.findall(r'\d{1,5}-\d{1,5}|\d{1,5}', v)]
    if items:
      out.setdefault(role, []).extend(i for i in items if i not in out.get(role, []))
  return out


def _numbers(word: str) -> set[str]:
  return set(re.findall(r'(?<![\d.])\d+(?![\d.]\d)', word))


def present(role: str, value: str, words) -> bool:
  """Whether `value` (of `role`) occurs in one of the command's words."""
  if role in ('port', 'rate', 'top_n', 'timing'):
    wanted = value.replace(',', '')
    if re.fullmatch(r'\d+-\d+', wanted):  # A range: written as such, or its ends covered.
      low, high = wanted.split('-')
      return any(wanted in w for w in words) or all(
          any(p in _numbers(w) or _in_range(p, w) for w in words) for p in (low, high))
    return any(wanted in _numbers(w) or _in_range(wanted, w) for w in words)
  if role == 'extensions':
    pattern = re.compile(rf'(?<![a-z0-9]){re.escape(value.lstrip("."))}(?![a-z0-9])', re.I)
    return any(pattern.search(w) for w in words)
  if role in ('url',):
    bare = re.sub(r'^https?://', '', value, flags=re.I).rstrip('/')
    if any(value.rstrip('/').lower() in w.lower() or bare.lower() in w.lower() for w in words):
      return True
    # A tool that takes the host and the path apart (hydra's `host http-post-form
    # "/login.php:..."`) carries the URL when both pieces are there.
    host, _, path = bare.partition('/')
    return bool(path) and any(host.lower() == host_of(w) for w in words) and any(
        ('/' + path).lower() in w.lower() for w in words)
  if role == 'host':  # Whole names only: `mail.lan` is not in `other-mail.lan`.
    pattern = re.compile(rf'(?<![\w.])(?<![a-z]-){re.escape(value)}(?![\w]|-[a-z]|\.[\w])',
                         re.IGNORECASE)  # An address range a-b holds its ends.
    return any(pattern.search(w) or _octets_cover(w, value) for w in words)
  if role in ('host', 'cidr', 'wordlist', 'userlist', 'passlist', 'output', 'input', 'path',
              'combolist', 'domain'):
    return any(value.lower() in w.lower() for w in words)
  pattern = re.compile(rf'(?<![\w.]){re.escape(value)}(?![\w]|\.\d)', re.IGNORECASE)
  return any(pattern.search(w) for w in words)


def _octets_cover(word: str, address: str) -> bool:
  """Whether an nmap/masscan octet range (`192.168.1.1-254`, `10.0.*.1`) holds `address`."""
  match = re.fullmatch(r'([\d*,-]+)\.([\d*,-]+)\.([\d*,-]+)\.([\d*,-]+)', word)
  if not match or '-' not in word and '*' not in word and ',' not in word:
    return False
  for spec, octet in zip(match.groups(), address.split('.')):
    if not any(part == '*' or part == octet or (
        re.fullmatch(r'\d+-\d+', part) and
        int(part.split('-')[0]) <= int(octet) <= int(part.split('-')[1]))
               for part in spec.split(',')):
      return False
  return True


def _in_range(port: str, word: str) -> bool:
  """`-p 1-1000` contains port 22; `-p-` contains every port."""
  if word in ('-', '-p-', '1-65535', '0-65535'):
    return True
  for low, high in re.findall(r'(\d+)-(\d+)', word):
    if int(low) <= int(port) <= int(high):
      return True
  return False


_SCHEME_HOST = re.compile(r'\b[a-z][\w+.-]*://\[?([^/:\s\]]+)', re.IGNORECASE)


def hosts_in(word: str) -> list[str]:
  """Network targets written in one command word (IPs, CIDRs, URLs, host names)."""
  found = [m.group(0).rstrip('/.,') for m in URL.finditer(word)]
  rest = URL.sub(' ', word)
  found += [m.group(1) for m in _SCHEME_HOST.finditer(rest)]  # imap://host, ssh://host:22
  rest = _SCHEME_HOST.sub(' ', rest)
  found += [m.group(0) for m in _CIDR.finditer(rest)]
  rest = _CIDR.sub(' ', rest)
  found += [m.group(0) for m in _IP.finditer(rest)]
  found += [m.group(0) for m in _HOSTNAME.finditer(rest)]
  return found


def host_of(value: str) -> str:
  """The host part of a URL, CIDR or host[:port] (for comparing targets)."""
  value = re.sub(r'^[a-z][\w+.-]*://', '', value.lower())
  value = re.split(r'[/:?#]', value, maxsplit=1)[0]
  return value
