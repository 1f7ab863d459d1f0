"""Tests for the held-out evaluation set: coverage, hygiene (disjoint from the task bank and
the few-shot exemplars), the `small` split, and the TFDS round trip."""

import collections
import importlib
import json
import re

import pytest

from inversion_jax.decode import prompts
from inversion_jax.errors import UserError
from inversion_jax.quality import heldout
from inversion_jax.quality.heldout import builder
from inversion_jax.tasks.bank import default_bank

TOOLS = ('nmap', 'nikto', 'gobuster', 'dirb', 'netcat', 'searchsploit', 'hydra', 'sqlmap',
         'masscan')
MIN_PER_TOOL = {'nmap': 30, 'netcat': 18}  # Every other tool: 15.
ROLES = {'host', 'cidr', 'url', 'port', 'ports', 'wordlist', 'userlist', 'passlist', 'user',
         'password', 'service', 'software', 'version', 'rate', 'top_n', 'timing', 'output',
         'input', 'extensions', 'domain', 'combolist'}
FIELDS = {'id', 'tool', 'intent', 'task', 'values', 'intent_options', 'references', 'compound',
          'small'}
DOC_RANGES = re.compile(r'192\.0\.2\.|198\.51\.100\.|203\.0\.113\.|example\.(com|org)', re.I)


@pytest.fixture(scope='module')
def records():
  return builder.read_source()


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
  monkeypatch.setenv(heldout.CACHE_ENV, str(tmp_path))
  return tmp_path


def _values(record):
  return [v for value in record['values'].values()
          for v in (value if isinstance(value, list) else [value])]


def _exemplar_texts():
  return ([t for ex in prompts.FEWSHOT_GENERATION for t in ex[1:]] +
          [t for ex in prompts.FEWSHOT_RECONSTRUCTION for t in ex[1:]] +
          [t for ex in prompts.FEWSHOT_RATING for t in ex[:2]])


def _occurs(value, text, flags=0):
  """`value` occurs in `text` as a whole item: not inside a longer number, path or address."""
  return re.search(rf'(?<![\w./:-]){re.escape(value)}(?![\w/:-]|\.\w)', text, flags) is not None


def test_occurs_finds_whole_items_only():
  assert _occurs('22', 'Scan port 22 of a host')
  assert _occurs('ssh', 'the ssh login')
  assert not _occurs('22', 'the subnet 10.44.0.0/22')
  assert not _occurs('5000', 'subdomains-top1million-5000.txt')
  assert not _occurs('ftp', 'proftpd 1.3.3c')


def test_size_and_coverage(records):
  assert len(records) >= 150
  counts = collections.Counter(r['tool'] for r in records)
  assert set(counts) == set(TOOLS)
  for tool in TOOLS:
    assert counts[tool] >= MIN_PER_TOOL.get(tool, 15), (tool, counts[tool])
  assert sum(r['compound'] for r in records) >= 0.25 * len(records)


def test_record_fields_and_types(records):
  for r in records:
    assert set(r) == FIELDS, r['id']
    assert re.fullmatch(rf'{r["tool"]}-\d{{3}}', r['id']), r['id']
    assert re.fullmatch(r'[a-z][a-z0-9_]*', r['intent']), r['id']
    assert isinstance(r['task'], str) and r['task'].strip() == r['task'] and r['task'], r['id']
    assert r['values'] and set(r['values']) <= ROLES, r['id']
    for value in r['values'].values():
      items = value if isinstance(value, list) else [value]
      assert items and all(isinstance(v, str) and v for v in items), r['id']
    assert isinstance(r['intent_options'], list), r['id']
    for alternative in r['intent_options']:
      assert alternative and all(isinstance(o, str) and o for o in alternative), r['id']
    assert r['references'] and all(isinstance(c, str) and c for c in r['references']), r['id']
    assert isinstance(r['compound'], bool) and isinstance(r['small'], bool), r['id']


def test_ids_are_unique(records):
  ids = [r['id'] for r in records]
  assert len(ids) == len(set(ids))


def test_tasks_are_unique(records):
  tasks = [r['task'].lower() for r in records]
  assert len(tasks) == len(set(tasks))


def test_every_value_appears_in_its_task_and_references(records):
  for r in records:
    for value in _values(r):
      assert value in r['task'], (r['id'], value)
      for command in r['references']:
        assert value in command, (r['id'], value, command)


def test_gobuster_alternatives_start_with_the_mode(records):
  modes = {'dir', 'dns', 'vhost', 'fuzz', 's3', 'gcs', 'tftp'}
  for r in records:
    if r['tool'] == 'gobuster':
      assert r['intent_options'], r['id']
      for alternative in r['intent_options']:
        assert alternative[0] in modes, r['id']
        assert all(c.split()[1] == alternative[0] for c in r['references']), r['id']


def test_no_task_matches_a_bank_template(records):
  patterns = [re.compile(re.sub(r'\\\{\w+\\\}', '.+', re.escape(t.text)), re.I)
              for tool in default_bank().tools for t in tool.templates]
  for r in records:
    for pattern in patterns:
      assert not pattern.fullmatch(r['task']), (r['id'], pattern.pattern)


def test_no_value_is_a_train_pool_value(records):
  train = set().union(*default_bank().slot_values('train').values())
  for r in records:
    assert not set(_values(r)) & train, r['id']


def test_no_task_names_a_train_pool_value(records):
  # Timing levels are single digits that occur inside versions and counts; the rest must not
  # occur as a whole item anywhere in a task.
  for slot, values in default_bank().slot_values('train').items():
    if slot == 'timing':
      continue
    for r in records:
      leaked = [v for v in values if _occurs(v, r['task'], re.I)]
      assert not leaked, (r['id'], slot, leaked)


def test_no_value_appears_in_a_fewshot_exemplar(records):
  texts = _exemplar_texts()
  for r in records:
    for value in _values(r):
      assert not any(_occurs(value, text) for text in texts), (r['id'], value)


def test_no_documentation_ranges(records):
  for r in records:
    assert not DOC_RANGES.search(r['task']), r['id']
    assert not any(DOC_RANGES.search(c) for c in r['references']), r['id']


def test_small_split_is_stratified(records):
  small = [r for r in records if r['small']]
  assert len(small) == 4 * len(TOOLS)
  per_tool = collections.defaultdict(list)
  for r in small:
    per_tool[r['tool']].append(r)
  for tool in TOOLS:
    chosen = per_tool[tool]
    assert len(chosen) == 4, tool
    assert len({r['intent'] for r in chosen}) >= 3, tool
    assert any(r['compound'] for r in chosen), tool


def test_unknown_split_is_a_user_error():
  with pytest.raises(UserError) as error:
    heldout.load('train')
  message = str(error.value)
  assert '\n' not in message and 'test' in message and 'small' in message
  with pytest.raises(UserError):
    heldout.data_source('validation')


def test_splits():
  assert heldout.SPLITS == builder.SPLITS == ('test', 'small')


def test_cache_dir_follows_the_environment(tmp_cache):
  assert heldout.cache_dir() == tmp_cache / 'tfds'
  assert heldout.data_dir().parent == tmp_cache / 'tfds'
  assert builder.source_sha256()[:16] in heldout.data_dir().name


def test_tfds_round_trip_equals_the_source(records, tmp_cache):
  assert heldout.load('test') == records
  assert heldout.load('small') == [r for r in records if r['small']]
  assert (heldout.data_dir() / builder.NAME / '1.0.0').is_dir()
  assert str(heldout.data_dir()).startswith(str(tmp_cache))


def test_load_returns_plain_python_values(tmp_cache):
  del tmp_cache
  record = heldout.load('small')[0]
  assert isinstance(record['references'], list) and isinstance(record['intent_options'], list)
  assert all(type(record[k]) is str for k in ('id', 'tool', 'intent', 'task'))
  assert type(record['compound']) is bool
  record['references'].append('mutated')  # A caller's copy: the cache stays intact.
  assert 'mutated' not in heldout.load('small')[0]['references']


def test_tfds_data_source_reads_array_record(records, tmp_cache):
  del tmp_cache
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  directory = heldout.prepare()
  assert list((directory / builder.NAME / '1.0.0').glob('*.array_record-*'))
  source = tfds.data_source(builder.NAME, split='test', data_dir=str(directory), download=False)
  assert len(source) == len(records)
  decoded = sorted((builder.decode(source[i]) for i in range(len(source))),
                   key=lambda r: r['id'])
  assert decoded == sorted(records, key=lambda r: r['id'])
  assert len(heldout.data_source('small')) == 4 * len(TOOLS)


def test_edited_source_is_rebuilt(records, tmp_path, tmp_cache, monkeypatch):
  del tmp_cache
  first = heldout.data_dir()
  edited = tmp_path / 'source.jsonl'
  edited.write_text(''.join(json.dumps(r) + '\n' for r in records[:5]), encoding='utf-8')
  monkeypatch.setattr(builder, 'source_path', lambda: edited)
  assert heldout.data_dir() != first
  assert heldout.load('test') == records[:5]


def test_every_reference_passes_the_validator(records):
  try:
    validator = importlib.import_module('inversion_jax.quality.validator')
  except Exception as error:  # pylint: disable=broad-except
    pytest.skip(f'inversion_jax.quality.validator does not import yet: {error}')
  failures = []
  for r in records:
    for command in r['references']:
      verdict = validator.validate(r['tool'], r['task'], command,
                                   intent_options=r['intent_options'], values=r['values'])
      assert isinstance(verdict.ok, bool) and isinstance(verdict.quality, float)
      assert isinstance(verdict.reasons, list)
      if not verdict.ok:
        failures.append(f'{r["id"]}: {command!r}: {verdict.reasons}')
  assert not failures, '\n'.join(failures)


def test_a_record_without_a_reference_is_refused(records, tmp_path):
  edited = tmp_path / 'source.jsonl'
  broken = dict(records[1], references=[])
  edited.write_text(json.dumps(records[0]) + '\n' + json.dumps(broken) + '\n', encoding='utf-8')
  with pytest.raises(UserError) as error:
    builder.read_source(edited)
  message = str(error.value)
  assert '\n' not in message and f'{edited}:2' in message and records[1]['id'] in message
  assert 'no reference' in message


def test_a_reference_its_validator_rejects_is_refused(records, tmp_path, tmp_cache, monkeypatch):
  del tmp_cache
  wrong = dict(records[0], references=records[0]['references'] + ['masscan -p80 10.0.0.0/8'])
  edited = tmp_path / 'source.jsonl'
  edited.write_text(json.dumps(wrong) + '\n', encoding='utf-8')
  with pytest.raises(UserError) as error:
    builder.check_references(builder.read_source(edited), edited)
  message = str(error.value)
  assert '\n' not in message and records[0]['id'] in message and 'masscan -p80' in message
  monkeypatch.setattr(builder, 'source_path', lambda: edited)
  with pytest.raises(UserError, match='fails its own validator'):
    heldout.load('test')  # Checked when the dataset is built.


def test_tasks_with_several_forms_have_several_references(records):
  several = [r for r in records if len(r['references']) >= 2]
  assert len(several) >= 120
  for r in records:  # Every alternative intent option set is realised by a reference.
    if len(r['intent_options']) > 1:
      assert len(r['references']) >= 2, r['id']
