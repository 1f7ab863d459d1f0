"""README's module map, generated from the package tree and each module's docstring.

  python experiments/module_map.py           # print the map
  python experiments/module_map.py --write   # replace it in README.md

The map sits between `<!-- module map: start -->` and `<!-- module map: end -->`;
`tests/test_module_map.py` fails when the tree and README differ, so it cannot go stale.
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'inversion_jax'
START, END = '<!-- module map: start -->', '<!-- module map: end -->'


def summary(path: pathlib.Path) -> str:
  """The first line of a module's docstring."""
  doc = ast.get_docstring(ast.parse(path.read_text()))
  if not doc:
    raise ValueError(f'{path.relative_to(ROOT)} has no docstring: say in one line what it is for')
  return doc.splitlines()[0]


def module_map(package: pathlib.Path = PACKAGE) -> list[str]:
  """One line per package: what it is for (its docstring) and its modules and subpackages;
  every module needs a docstring, whose first line says what it is for in the code."""
  lines, packages = [], [package]
  while packages:
    current = packages.pop(0)
    modules = [p for p in sorted(current.glob('*.py')) if p.name != '__init__.py']
    subs = sorted(p for p in current.iterdir() if (p / '__init__.py').is_file())
    for path in modules:
      summary(path)
    names = [f'`{p.name}`' for p in modules] + [f'`{p.name}/`' for p in subs]
    where = current.relative_to(package.parent).as_posix() + '/'
    lines.append(f'- `{where}` — {summary(current / "__init__.py")} {", ".join(names)}')
    packages.extend(subs)
  return lines


def block() -> str:
  return '\n'.join([START, *module_map(), END])


def replace(readme_text: str) -> str:
  start, end = readme_text.find(START), readme_text.find(END)
  if start < 0 or end < start:
    raise ValueError(f'README has no {START} ... {END} block')
  return readme_text[:start] + block() + readme_text[end + len(END):]


def main(argv: list[str]) -> int:
  if argv[1:] == ['--write']:
    readme = ROOT / 'README.md'
    readme.write_text(replace(readme.read_text()))
  elif argv[1:]:
    print('usage: python experiments/module_map.py [--write]', file=sys.stderr)
    return 2
  else:
    print(block())
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
