"""Tests for the task bank: data, sampling, splits and validation of user files."""

import collections
import json
import re

import pytest

from inversion_jax.errors import UserError
from inversion_jax.tasks import SPLITS, TaskBank, default_bank, default_bank_path, sample_tasks

TOOLS = ('nmap', 'nikto', 'gobuster', 'dirb', 'netcat', 'searchsploit', 'hydra', 'sqlmap',
         'masscan')


@pytest.fixture(scope='module')
def bank():
  return default_bank()


def _domain(**overrides):
  """A minimal valid domain file's content; overrides replace top-level keys."""
  data = {
      'pools': {'host': {'train': ['10.1.1.1'], 'heldout': ['10.9.9.9']}},
      'tools': [{'name': 'ping', 'binaries': ['ping'], 'intents': [
          {'intent': 'reach', 'expected_options': ['-c'],
           'templates': ['Ping {host}', 'Check that {host} answers pings']}]}],
  }
  return data | overrides


def _tools(templates, options=()):
  """A one-tool, one-intent "tools" list."""
  return [{'name': 'ping', 'intents': [
      {'intent': 'reach', 'expected_options': list(options), 'templates': templates}]}]


def _write(tmp_path, data, name='domain.json'):
  path = tmp_path / name
  path.write_text(data if isinstance(data, str) else json.dumps(data))
  return path


def test_default_bank_has_the_nine_original_tools(bank):
  assert bank.tool_names == TOOLS
  assert bank.tool('netcat').binaries == ('nc', 'ncat', 'netcat')


def test_every_intent_has_several_phrasings(bank):
  for tool in bank.tools:
    counts = collections.Counter(t.intent for t in tool.templates)
    assert min(counts.values()) >= 2, (tool.name, counts)


def test_nmap_intents_record_expected_options(bank):
  options = {t.intent: t.expected_options for t in bank.tool('nmap').templates}
  assert options == {
      'open_ports': (), 'service_version': ('-sV',), 'given_ports': ('-p',),
      'syn_scan': ('-sS',), 'os_detection': ('-O',), 'top_ports': ('--top-ports',),
      'aggressive': ('-A',), 'timing': ('-T{timing}',)}


def test_sampling_is_reproducible(bank):
  assert sample_tasks(bank, 30, seed=3) == sample_tasks(bank, 30, seed=3)
  assert sample_tasks(bank, 30, seed=3) != sample_tasks(bank, 30, seed=4)


def test_sampling_is_round_robin_over_tools(bank):
  counts = collections.Counter(t.tool for t in sample_tasks(bank, 50, seed=0))
  assert set(counts) == set(TOOLS)
  assert set(counts.values()) == {5, 6}


@pytest.mark.parametrize('split', SPLITS)
def test_sampled_tasks_are_filled_from_their_split(bank, split):
  allowed = bank.slot_values(split)
  for task in sample_tasks(bank, 300, seed=1, split=split):
    assert task.split == split
    assert not re.search(r'[{}]', task.text + ''.join(task.expected_options)), task
    for slot, value in task.slots.items():
      assert value in allowed[slot] and value in task.text


def test_splits_have_disjoint_values_per_slot(bank):
  train, heldout = bank.slot_values('train'), bank.slot_values('heldout')
  assert set(train) == set(heldout)
  for slot in train:
    assert not train[slot] & heldout[slot], slot


def test_heldout_targets_do_not_contain_train_hosts(bank):
  train_hosts = bank.slot_values('train')['host']
  heldout = bank.slot_values('heldout')
  for slot in ('host', 'cidr', 'url', 'sqli_url'):
    for value in heldout[slot]:
      assert not any(re.search(rf'(?<![\w.]){re.escape(h)}(?![\w.])', value)
                     for h in train_hosts), value


def test_timing_option_is_filled_with_the_slot(bank):
  tasks = [t for t in sample_tasks(bank, 900, seed=2) if t.intent == 'timing']
  assert tasks
  for task in tasks:
    assert task.expected_options == (f'-T{task.slots["timing"]}',)


def test_software_and_version_are_drawn_as_a_pair(bank):
  pool = bank.tool('searchsploit').pools['version']
  pairs = {(e['software'], e['version']) for e in pool.values['train']}
  tasks = [t for t in sample_tasks(bank, 900, seed=5) if t.intent == 'exploit_search_version']
  assert tasks
  for task in tasks:
    assert (task.slots['software'], task.slots['version']) in pairs


def test_new_domain_file_extends_the_bank(tmp_path):
  path = _write(tmp_path, _domain())
  bank = default_bank(extra_files=[path])
  assert bank.tool_names == TOOLS + ('ping',)
  tasks = sample_tasks(bank, 20, seed=0, split='heldout')
  ping = [t for t in tasks if t.tool == 'ping']
  assert len(ping) == 2
  assert all('10.9.9.9' in t.text and t.expected_options == ('-c',) for t in ping)


def test_default_bank_path_is_the_packaged_file():
  assert TaskBank.from_json(default_bank_path()).tool_names == TOOLS


@pytest.mark.parametrize('data, message', [
    (_domain(tools=_tools(['Ping {target}'])), r'unknown slot \{target\}'),
    (_domain(pools={'host': {'train': [], 'heldout': ['a']}}), 'non-empty list'),
    (_domain(pools={'host': {'train': ['a']}}), 'exactly the keys'),
    (_domain(pools={'host': {'train': ['a', 'b'], 'heldout': ['b']}}), 'disjoint'),
    (_domain(pools={'host': {'train': ['a', 'a'], 'heldout': ['b']}}), 'duplicate'),
    (_domain(pools={'host': {'train': [' a'], 'heldout': ['b']}}), 'surrounding spaces'),
    (_domain(pools={'host': {'train': ['a'], 'heldout': ['b']},
                    'both': {'train': [{'host': 'c', 'v': '1'}],
                             'heldout': [{'host': 'd', 'v': '2'}]}}), 'filled by pools'),
    (_domain(pools={'sv': {'train': [{'s': 'a', 'v': '1'}, {'s': 'b'}],
                           'heldout': [{'s': 'c', 'v': '2'}]}}), 'every entry must fill'),
    (_domain(tools=_tools(['Ping {host:>9}'])), 'plain slot name'),
    (_domain(tools=_tools(['Ping {host'])), 'bad braces'),
    (_domain(tools=_tools(['Ping {host}'], ['-c{count}'])), 'unknown slot'),
    (_domain(pools={'host': {'train': ['a'], 'heldout': ['b']},
                    'count': {'train': ['1'], 'heldout': ['2']}},
             tools=_tools(['Ping {host}'], ['-c{count}'])), 'does not'),
    (_domain(tools=[{'name': 'ping', 'intents': []}]), '"intents" must be'),
    (_domain(tools=[]), '"tools" must be'),
    (_domain(tools=_tools([])), '"templates" must be'),
    ('{"tools": [', 'not valid JSON'),
])
def test_bad_domain_files_raise_user_errors_naming_the_file(tmp_path, data, message):
  path = _write(tmp_path, data)
  with pytest.raises(UserError, match=message) as error:
    TaskBank.from_json(path)
  assert str(path) in str(error.value)
  assert '\n' not in str(error.value)


def test_bad_template_error_names_tool_and_intent(tmp_path):
  data = _domain(tools=_tools(['Ping {target}']))
  with pytest.raises(UserError, match=r'"ping".*"reach".*Ping \{target\}'):
    TaskBank.from_json(_write(tmp_path, data))


def test_missing_file_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='cannot read task file'):
    TaskBank.from_json(tmp_path / 'nope.json')


def test_duplicate_tool_across_files_is_a_user_error(tmp_path):
  first = _write(tmp_path, _domain(), 'a.json')
  second = _write(tmp_path, _domain(), 'b.json')
  with pytest.raises(UserError, match='ping'):
    TaskBank.from_files([first, second])


def test_bad_sampling_arguments_are_user_errors(bank):
  with pytest.raises(UserError, match='heldout'):
    sample_tasks(bank, 3, seed=0, split='test')
  with pytest.raises(UserError, match='>= 0'):
    sample_tasks(bank, -1, seed=0)
  with pytest.raises(UserError, match='unknown tool'):
    bank.tool('curl')
