"""Builds `inversion_jax/quality/specs/<name>.json` from the curated `spec_sources/<name>.json`.

For each source it fetches the documentation the source names and checks the source against it:

  kind "debian"    `apt-get download <package>` into --cache (kept between runs), records the
                   package version (`dpkg -f`), the .deb's sha256 and the distribution (from
                   /etc/os-release), unpacks it (`dpkg-deb -x`) and renders the listed files
                   to text: man pages with groff, other files as (gunzipped) text. A listed
                   file under `docs/` is committed text in `spec_sources/docs/` (e.g. a
                   captured `--help`), not a path in the .deb. A version already given in the
                   source must equal the downloaded one.
  kind "upstream"  the documentation text is committed at `spec_sources/docs/<name>.txt`;
                   its sha256 is recorded; source.version and source.url come from the source.

VERIFY: every option name of the source (all aliases, global and per mode) must occur in the
rendered text as a word of its own (an option with its own `source` -- an upstream release
newer than the distribution's page -- is reported, not failed), or, for an option taking a value, directly followed by one
(`-T4`, `-p-`, `-PS22`). Group, requirement and intent references must name defined options.
Option-like words that begin a documentation line but are missing from the source are printed
as coverage warnings (not failures). Any failure prints one line per problem and exits 1.

Then it writes the spec (the source with its `source` block completed) as pretty JSON with
sorted keys, and loads it back with `inversion_jax.quality.specs.load_file`.

Needs the network (a Debian mirror) and dpkg/groff; CI never runs it. Nothing here runs a tool.

  PYTHONPATH=. python3 experiments/extract_specs.py --tools nmap,masscan
"""

import argparse
import glob
import gzip
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inversion_jax.errors import UserError  # noqa: E402
from inversion_jax.quality import specs  # noqa: E402

SOURCES = ROOT / 'inversion_jax' / 'quality' / 'spec_sources'
OUTPUT = ROOT / 'inversion_jax' / 'quality' / 'specs'
DEFAULT_CACHE = os.path.join(tempfile.gettempdir(), 'inversion_jax_spec_debs')

_NAME_CHARS = r'[A-Za-z0-9_-]'
# An option word at the start of a documentation line (after indentation or a bullet), and
# further ones listed after it on that line ("-PE; -PP; -PM", "-h, --help", "-p <ports>, --ports").
_LINE_OPTION = re.compile(r'^\s*(?:[\u2022*+]\s*)?(--?[A-Za-z0-9][A-Za-z0-9_-]*)')
_MORE_OPTIONS = re.compile(r'(?:^|[;,/]\s*|\bor\s+)(--?[A-Za-z0-9][A-Za-z0-9_-]*)')
_DASHES = str.maketrans({'\u2010': '-', '\u2011': '-', '\u2012': '-', '\u2013': '-', '\u2212': '-',
                         '\u00ad': ''})


def run(argv, **kwargs) -> str:
  try:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs).stdout
  except FileNotFoundError:
    raise UserError(f'{argv[0]} is not installed; this script needs dpkg, apt-get and groff') from None
  except subprocess.CalledProcessError as error:
    detail = ' '.join((error.stderr or error.stdout or '').split())[-300:]
    raise UserError(f'{" ".join(argv)} failed ({error.returncode}): {detail}') from None


def sha256(path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def distribution() -> str:
  fields = {}
  try:
    for line in pathlib.Path('/etc/os-release').read_text().splitlines():
      key, _, value = line.partition('=')
      fields[key] = value.strip().strip('"')
  except OSError:
    return 'unknown'
  return ' '.join(v for v in (fields.get('ID'), fields.get('VERSION_CODENAME')) if v) or 'unknown'


def download(package: str, cache: str) -> str:
  """The cached .deb of `package`, fetched with apt-get download when absent."""
  os.makedirs(cache, exist_ok=True)
  pattern = os.path.join(cache, f'{package}_*.deb')
  if not glob.glob(pattern):
    run(['apt-get', 'download', package], cwd=cache)
  debs = sorted(glob.glob(pattern), key=os.path.getmtime)
  if not debs:
    raise UserError(f'apt-get download {package} left no {package}_*.deb in {cache}')
  return debs[-1]


def render(path: pathlib.Path) -> str:
  """A man page through groff (man or mdoc macros), any other file as (gunzipped) text."""
  raw = path.read_bytes()
  if path.suffix == '.gz':
    raw = gzip.decompress(raw)
  text = raw.decode('utf-8', errors='replace')
  if '/man/' in str(path) or re.search(r'^\.(?:TH|Dd)\b', text, re.M):
    # No hyphenation and a wide line, so option names are never split across lines.
    out = subprocess.run(['groff', '-mandoc', '-Tutf8', '-rHY=0', '-rLL=160n', '-P-c'],
                         input=raw, capture_output=True, check=False)
    if out.returncode != 0:
      raise UserError(f'groff could not render {path}: {out.stderr.decode(errors="replace")[-200:]}')
    text = out.stdout.decode('utf-8', errors='replace')
    text = re.sub(r'.\x08', '', text)  # What `col -b` would strip: overstrike bold/underline.
  return text.translate(_DASHES)


def debian_docs(source: dict, cache: str) -> tuple[str, dict]:
  package = source['package']
  deb = download(package, cache)
  version = run(['dpkg-deb', '-f', deb, 'Version']).strip()
  completed = {'version': version, 'sha256': sha256(deb), 'distribution': distribution()}
  codename = completed['distribution'].split()[-1]
  completed.setdefault('url', f'https://packages.debian.org/{codename}/{package}')
  files = source.get('files') or []
  if not files:
    raise UserError(f'source of {package} lists no documentation files')
  given = source.get('version')
  if given and given != version:
    raise UserError(f'the source was read from {package} {given}, but apt-get download gives {version}; '
                    'recheck the source against it and update source.version')
  with tempfile.TemporaryDirectory() as tmp:
    run(['dpkg-deb', '-x', deb, tmp])
    texts = []
    for name in files:
      if name.startswith('docs/'):  # Committed text next to the sources (e.g. captured --help).
        path = SOURCES / name
      else:
        path = pathlib.Path(tmp) / name.lstrip('/')
      if not path.is_file():
        where = SOURCES if name.startswith('docs/') else f'{package} {version}'
        raise UserError(f'{where} has no file {name}')
      texts.append(render(path))
  return '\n'.join(texts), completed


def upstream_docs(name: str, source: dict) -> tuple[str, dict]:
  path = SOURCES / 'docs' / f'{name}.txt'
  if not path.is_file():
    raise UserError(f'upstream source {name} needs its documentation text at {path}')
  for field in ('version', 'url'):
    if not source.get(field):
      raise UserError(f'upstream source {name} must give source.{field}')
  return path.read_text().translate(_DASHES), {'sha256': sha256(path)}


def all_options(obj: dict):
  """(where, option object) for the global options and those of every mode."""
  for option in obj.get('options', ()):
    yield None, option
  for mode, body in (obj.get('modes') or {}).items():
    for option in body.get('options', ()):
      yield mode, option


def documented(name: str, takes_value: bool, text: str) -> bool:
  bounded = re.compile(rf'(?<!{_NAME_CHARS}){re.escape(name)}(?!{_NAME_CHARS})')
  if bounded.search(text):
    return True
  # `-T4`, `-p-`, `-PS22`, `-oG-`: the name with its value attached.
  return takes_value and re.search(rf'(?<!{_NAME_CHARS}){re.escape(name)}\S', text) is not None


def resolves(word: str, names: set[str], valued: set[str]) -> bool:
  """Whether an intent's option string names a defined option ('-T', '-p-', '-p1-65535')."""
  base = word.split('=', 1)[0].split(' ', 1)[0]
  return base in names or any(word.startswith(n) and len(word) > len(n) for n in valued)


def verify(name: str, obj: dict, text: str) -> tuple[list[str], list[str]]:
  problems, warnings = [], []
  names, valued = set(), set()
  for mode, option in all_options(obj):
    where = f' (mode {mode})' if mode else ''
    for alias in option.get('names', ()):
      names.add(alias)
      if option.get('value'):
        valued.add(alias)
      if not documented(alias, bool(option.get('value')), text):
        if option.get('source'):  # Documented elsewhere (an upstream release), cited.
          warnings.append(f'{name}: option {alias}{where} is from {option["source"][:60]}...')
        else:
          problems.append(f'{name}: option {alias}{where} does not occur in the documentation')
  names |= set(obj.get('modes') or {})
  for intent, body in (obj.get('intents') or {}).items():
    for alternative in body.get('options', ()):
      for word in alternative:
        if not resolves(word, names, valued):
          problems.append(f'{name}: intent {intent} names {word!r}, which is not a defined option')
  seen = set()
  for line in text.splitlines():
    first = _LINE_OPTION.match(line)
    if not first:
      continue
    head = line.strip().lstrip('\u2022*+ ')
    for token in [first.group(1)] + _MORE_OPTIONS.findall(head):
      token = token.rstrip('-')
      if token in names or token in seen or not re.search('[A-Za-z]', token):
        continue
      if any(token.startswith(v) for v in valued):
        continue  # `-T4`, `-p22`: an attached value.
      seen.add(token)
      warnings.append(token)
  return problems, warnings


def complete(name: str, cache: str) -> tuple[dict, list[str]]:
  path = SOURCES / f'{name}.json'
  try:
    obj = json.loads(path.read_text())
  except ValueError as error:
    raise UserError(f'{path} is not valid JSON ({error})') from None
  source = dict(obj.get('source') or {})
  kind = source.get('kind')
  if kind == 'debian':
    text, completed = debian_docs(source, cache)
  elif kind == 'upstream':
    text, completed = upstream_docs(name, source)
  else:
    raise UserError(f'{path}: source.kind must be "debian" or "upstream", not {kind!r}')
  source.update(completed)
  obj['source'] = source
  problems, warnings = verify(name, obj, text)
  if problems:
    return obj, problems + [f'{name}: verification failed, {len(problems)} problem(s); nothing written']
  specs.parse_spec(obj, path)  # Schema and references, before anything is written.
  OUTPUT.mkdir(parents=True, exist_ok=True)
  out = OUTPUT / f'{name}.json'
  out.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + '\n')
  spec = specs.load_file(out)
  option_count = sum(1 for _ in all_options(obj))
  print(f'{name}: {option_count} options, {spec.source["package"]} {spec.source["version"]}, '
        f'{len(warnings)} coverage warning(s){": " + " ".join(warnings) if warnings else ""}')
  return obj, []


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  available = sorted(p.stem for p in SOURCES.glob('*.json'))
  parser.add_argument('--tools', default=','.join(available),
                      help='comma-separated source names (default: every spec_sources/*.json)')
  parser.add_argument('--cache', default=DEFAULT_CACHE, help='download directory for .deb files')
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.tools.split(',') if n.strip()]
  failures = []
  for name in names:
    if name not in available:
      failures.append(f'{name}: no source {SOURCES / (name + ".json")}; have {", ".join(available)}')
      continue
    try:
      _, problems = complete(name, args.cache)
    except UserError as error:
      problems = [f'{name}: {" ".join(str(error).split())}']
    failures += problems
  for line in failures:
    print(f'error: {line}', file=sys.stderr)
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
