"""README's module map matches the package tree (experiments/module_map.py writes it)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('module_map', ROOT / 'experiments' / 'module_map.py')
module_map = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(module_map)


def test_readme_module_map_matches_the_tree():
  readme = (ROOT / 'README.md').read_text()
  assert module_map.replace(readme) == readme, (
      'README\'s module map is stale: run python experiments/module_map.py --write')


def test_every_module_is_in_the_map():
  text = module_map.block()
  for path in (ROOT / 'inversion_jax').rglob('*.py'):
    if path.name != '__init__.py':
      assert f'`{path.name}`' in text, path


def test_a_module_without_a_docstring_is_refused(tmp_path):
  (tmp_path / 'bare.py').write_text('x = 1\n')
  try:
    module_map.module_map(tmp_path)
  except ValueError as error:
    assert 'bare.py' in str(error)
  else:
    raise AssertionError('a module without a docstring was mapped')
