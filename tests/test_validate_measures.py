"""The measure check: degradation builders on a few held-out tasks, the table, the rank
correlation on a tiny rows fixture, the CLI and its bad input; nothing starts a process."""

import json
import pathlib
import subprocess
import sys

import pytest

from inversion_jax.quality import degrade, measure_check, options, specs
from inversion_jax.quality.heldout import builder

ROOT = pathlib.Path(__file__).resolve().parent.parent

TASKS = ('nmap-030', 'netcat-006', 'nikto-004', 'gobuster-004', 'searchsploit-007')


@pytest.fixture(scope='module')
def records():
  by_id = {r['id']: r for r in builder.read_source()}
  return {task: by_id[task] for task in TASKS}


def _parsed(tool, command):
  segment = next(s for s in degrade.shell.segments(command)
                 if s.program in specs.get(tool)[0].binaries)
  return options.parse(specs.get(tool)[0], segment.args)


def test_drop_intent(records):
  reference = 'nmap -sV -p 5432,6379 -oN db_services.txt db.corp.lan'
  assert degrade.degrade('drop_intent', records['nmap-030'], reference) == 'nmap db.corp.lan'
  assert degrade.degrade('drop_intent', records['netcat-006'], 'nc -lvnp 9001') == 'nc -vnp 9001'
  assert degrade.degrade('drop_intent', records['nikto-004'],
                         'nikto -h 10.66.12.7 -p 8081') == 'nikto'


def test_drop_target_takes_the_option_that_carries_it(records):
  assert degrade.degrade('drop_target', records['nikto-004'],
                         'nikto -h 10.66.12.7 -p 8081') == 'nikto -p 8081'
  assert degrade.degrade('drop_target', records['nmap-030'], records['nmap-030']['references'][0]) \
      == 'nmap -sV -p 5432,6379 -oN db_services.txt'
  assert degrade.degrade('drop_target', records['netcat-006'], 'nc -lvnp 9001') is None


def test_wrong_value_is_another_value_of_the_same_kind(records):
  assert degrade.degrade('wrong_value', records['nikto-004'],
                         'nikto -h 10.66.12.7 -p 8081') == 'nikto -h 11.66.12.7 -p 8081'
  assert degrade.degrade('wrong_value', records['netcat-006'], 'nc -lvnp 9001') == 'nc -lvnp 9002'
  assert 'other-db.corp.lan' in degrade.degrade('wrong_value', records['nmap-030'],
                                                records['nmap-030']['references'][0])


def test_added_options(records):
  record = records['nmap-030']
  reference = record['references'][0]
  unknown = degrade.degrade('unknown_option', record, reference)
  assert _parsed('nmap', unknown).unknown == [degrade.UNKNOWN_OPTION]
  duplicated = _parsed('nmap', degrade.degrade('duplicate', record, reference))
  assert duplicated.canonicals().count('-sV') == 2
  contradiction = _parsed('nmap', degrade.degrade('contradiction', record, reference))
  names = set(contradiction.canonicals())
  assert any(set(g.options) <= names or len(set(g.options) & names) >= 2
             for g in specs.get('nmap')[0].exclusive)
  spam = _parsed('nmap', degrade.degrade('flag_spam', record, reference))
  assert len(spam.canonicals()) == len(_parsed('nmap', reference).canonicals()) + degrade.SPAM_COUNT
  assert not spam.unknown and not spam.missing_values


def test_repeatable_options_are_no_duplicate(records):
  assert degrade.degrade('duplicate', records['netcat-006'], 'nc -v mail.internal.lan 143') is None


def test_chain_bare_and_prose(records):
  record = records['gobuster-004']
  reference = record['references'][0]
  assert degrade.degrade('extra_command', record, reference) == reference + '; rm -rf /tmp/x'
  assert degrade.degrade('bare', record, reference) == 'gobuster http://10.20.30.40:8081'
  assert degrade.degrade('bare', records['netcat-006'], 'nc -lvnp 9001') == 'nc 9001'
  assert degrade.degrade('bare', records['searchsploit-007'], 'searchsploit -t drupal 7.58') == \
      'searchsploit drupal 7.58'
  assert degrade.degrade('prose', record, reference).startswith('To do this')


def test_a_degradation_equal_to_a_reference_does_not_count(records):
  record = dict(records['netcat-006'], references=['nc -lvnp 9001', 'nc 9001'])
  assert degrade.degrade('bare', record, 'nc -lvnp 9001') is None


def test_every_class_on_every_reference_of_a_few_tasks(records, no_process):
  del no_process
  table = measure_check.degradations(list(records.values()))
  assert list(table) == ['reference', *degrade.CLASSES]
  references = sum(len(r['references']) for r in records.values())
  assert table['reference']['n'] == references
  assert table['reference']['nlc2cmd'] == 1.0
  for name in degrade.CLASSES:
    assert 0 < table[name]['n'] <= references, name
    for measure in measure_check.MEASURES:
      assert 0.0 <= table[name][f'below/{measure}'] <= 1.0
  assert table['prose'] == table['prose'] | {'strict': 0.0, 'graded': 0.0, 'nlc2cmd': -1.0}
  assert table['wrong_value']['nlc2cmd'] == 1.0  # NLC2CMD ignores values, by definition.
  text = measure_check.markdown(table, None)
  assert len([line for line in text.splitlines() if line.startswith('| ')]) == 12


ROWS = [{'id': 'nmap-001', 'command': 'nmap -sV 172.31.9.14'},
        {'id': 'nmap-002', 'command': 'nmap intranet.acme.lan'},
        {'id': 'netcat-006', 'command': 'Listen on port 9001'},
        {'id': 'nikto-004', 'command': 'nikto -h 10.66.12.7 -p 8081 -ssl'}]


def test_rank_correlation_on_a_tiny_rows_fixture(tmp_path, no_process):
  del no_process
  path = tmp_path / 'rows.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in ROWS), encoding='utf-8')
  rows = measure_check.read_rows(path)
  result = measure_check.correlation(builder.read_source(), rows)
  assert result['n'] == 4 and -1.0 <= result['spearman_rho'] <= 1.0
  assert result['spearman_rho'] > 0  # Right commands rank high on both, prose low on both.
  wrapped = tmp_path / 'base.json'
  wrapped.write_text(json.dumps({'rows': ROWS}), encoding='utf-8')
  assert measure_check.read_rows(wrapped) == rows


def run_cli(*args):
  return subprocess.run([sys.executable, str(ROOT / 'experiments' / 'validate_measures.py'),
                         *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_writes_the_table_and_refuses_bad_input(tmp_path):
  rows = tmp_path / 'rows.jsonl'
  rows.write_text(''.join(json.dumps(r) + '\n' for r in ROWS), encoding='utf-8')
  done = run_cli('--tasks=nmap-001,netcat-006', f'--rows={rows}', f'--output={tmp_path / "m"}')
  assert done.returncode == 0, done.stderr
  result = json.loads((tmp_path / 'm.json').read_text())
  assert result['tasks'] == 2 and result['correlation']['n'] == 4
  assert '| flag_spam |' in (tmp_path / 'm.md').read_text()
  binary = tmp_path / 'binary.jsonl'
  binary.write_bytes(b'{"id": "nmap-001", "command": "nmap \xff"}\n')
  for args, message in (([f'--rows={binary}'], 'not UTF-8'), (['--tasks=nmap-999'], 'nmap-999'),
                        ([f'--rows={tmp_path / "none.jsonl"}'], 'cannot read')):
    bad = run_cli('--tasks=nmap-001', *args, f'--output={tmp_path / "x"}')
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr, bad.stderr
    assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_validate_commands_refuses_non_utf8_input(tmp_path):
  path = tmp_path / 'commands.jsonl'
  path.write_bytes(b'{"tool": "nmap", "task": "Scan 10.0.0.1", "command": "nmap \xff 10.0.0.1"}\n')
  done = subprocess.run([sys.executable, str(ROOT / 'experiments' / 'validate_commands.py'),
                         f'--input={path}'], capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and 'Traceback' not in done.stderr
  assert 'not UTF-8' in done.stderr and len(done.stderr.strip().splitlines()) == 1
