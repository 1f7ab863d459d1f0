"""The validator's machinery on small inline specs and on the shipped ones."""

import json
import pathlib
import subprocess
import sys

import chex
import pytest

from inversion_jax.errors import UserError
from inversion_jax.quality import indicators, options, shell, specs, task_values, validator

ROOT = pathlib.Path(__file__).resolve().parent.parent

GETOPT = {
    'tool': 'toy', 'binaries': ['toy'], 'source': {'kind': 'debian', 'package': 'toy',
                                                   'version': '1'},
    'syntax': {'short_clusters': True, 'attached_values': True, 'long_prefixes': ['--'],
               'long_equals': True},
    'options': [{'names': ['-l', '--listen']}, {'names': ['-v'], 'repeatable': True},
                {'names': ['-n']}, {'names': ['-p', '--port'], 'value': 'port', 'role': 'port'},
                {'names': ['-z']}, {'names': ['-w', '--wait'], 'value': 'number'},
                {'names': ['-o'], 'value': 'path', 'role': 'output'}],
    'exclusive': [{'options': ['-l', '-z'], 'doc': 'listen or scan'}],
    'positionals': {'kinds': ['host', 'port'], 'min': 0},
    'intents': {'listen': {'keywords': [r'\blisten'], 'options': [['-l']]},
                'scan': {'keywords': [r'\bopen\b'], 'options': [['-z']]}},
}


@pytest.fixture
def toy_dir(tmp_path):
  (tmp_path / 'toy.json').write_text(json.dumps(GETOPT))
  specs.load_all.cache_clear()
  yield str(tmp_path)
  specs.load_all.cache_clear()


def test_shell_segments_unwrap_sudo_pipes_and_redirections():
  segments = shell.segments('sudo -u root nmap -sV 10.0.0.1 2>&1 | tee out.txt > log')
  assert [s.program for s in segments] == ['nmap', 'tee']
  assert segments[0].args == ('-sV', '10.0.0.1')
  assert shell.segments('python3 /opt/sqlmap/sqlmap.py -u x')[0].program == 'sqlmap'
  for bad in ('nmap "-sV host', 'nmap host |', 'nmap host >', '| nmap host'):
    with pytest.raises(shell.ShellSyntaxError):
      shell.segments(bad)


def test_getopt_clusters_attached_and_long_values(toy_dir):
  spec = specs.get('toy', toy_dir)[0]
  parsed = options.parse(spec, ['-lvnp', '4444'])
  assert parsed.canonicals() == ['-l', '-v', '-n', '-p'] and parsed.options[-1].value == '4444'
  parsed = options.parse(spec, ['-p4444', '--wait=3', '--port', '80', 'host'])
  assert [(o.spec.canonical, o.value) for o in parsed.options] == [
      ('-p', '4444'), ('-w', '3'), ('-p', '80')]
  assert parsed.positionals == ['host']
  parsed = options.parse(spec, ['-q', '--nope', '-p'])
  assert parsed.unknown == ['-q', '--nope'] and parsed.missing_values == ['-p']


def test_reasons_on_a_toy_tool(toy_dir):
  def check(task, command):
    return validator.validate('toy', task, command, spec_dir=toy_dir)

  assert check('Listen on port 4444', 'toy -lvnp 4444').ok
  assert check('Listen on port 4444', 'toy -l -p 4444 -v -v').ok  # -v is repeatable
  assert check('Listen on port 4444', 'toy -p 4444').reasons == ['intent_missing']
  assert check('Listen on port 4444', 'toy -l -p 5555').reasons == [
      'wrong_value', 'missing_value_of_task']
  assert 'contradictory_options' in check('Listen on port 4444', 'toy -lz -p 4444').reasons
  assert 'duplicate_option' in check('Listen on port 4444', 'toy -l -l -p 4444').reasons
  assert check('Check 10.1.2.3 for open port 22', 'toy -z 10.1.2.3 22').ok
  assert 'missing_target' in check('Check 10.1.2.3 for open port 22', 'toy -z 22').reasons
  assert 'echo_task' in check('Check 10.1.2.3 for open port 22',
                              'toy -z check 10.1.2.3 for open port 22').reasons
  assert check('Listen on port 4444', '').reasons == ['not_a_command']
  assert check('Listen on port 4444', 'Use toy to listen').reasons == ['not_a_command']
  assert check('Listen on port 4444', 'nmap -p 4444 x.local').reasons == ['wrong_tool']
  with pytest.raises(UserError, match='unknown tool'):
    validator.validate('nope', 'x', 'x', spec_dir=toy_dir)


def test_graded_quality_credits_what_the_task_requires(toy_dir):
  """A bare `tool <host>` must score low: an error-free collapse is not quality."""
  task = 'Check 10.1.2.3 for open port 22'
  good = validator.validate('toy', task, 'toy -z 10.1.2.3 22', spec_dir=toy_dir)
  bare = validator.validate('toy', task, 'toy 10.1.2.3', spec_dir=toy_dir)
  wrong_host = validator.validate('toy', task, 'toy 10.9.9.9 10.9.9.9', spec_dir=toy_dir)
  one_error = validator.validate('toy', task, 'toy -z -z 10.1.2.3 22', spec_dir=toy_dir)
  assert good.quality == 1.0
  # R = 1/4 V + 3/4 I: the target present, the port and the intent (-z) missing.
  chex.assert_trees_all_close(bare.quality, 0.25 * 0.5)
  assert wrong_host.quality == 0.0
  assert bare.quality < one_error.quality < good.quality
  # R x C x E: everything asked is there; one correctness check of 9 fails.
  chex.assert_trees_all_close(one_error.quality, 8 / 9)


def test_spec_with_unknown_field_is_a_user_error(tmp_path):
  (tmp_path / 'bad.json').write_text(json.dumps(GETOPT | {'colour': 'red'}))
  with pytest.raises(UserError, match="unknown field 'colour'"):
    specs.load_file(tmp_path / 'bad.json')
  bad_option = dict(GETOPT, options=[{'names': ['-x'], 'kind': 'port'}])
  with pytest.raises(UserError, match="unknown field 'kind' in options"):
    specs.parse_spec(bad_option, 'x.json')
  bad_group = dict(GETOPT, exclusive=[{'options': ['-l', '-Q']}])
  with pytest.raises(UserError, match="'-Q'"):
    specs.parse_spec(bad_group, 'x.json')


def test_task_values_rules():
  values = task_values.extract(
      'Brute-force ssh on 172.20.5.9 port 2222 as user operator with passwords from '
      'leaked_passwords.txt')
  assert values == {'host': ['172.20.5.9'], 'passlist': ['leaked_passwords.txt'],
                    'port': ['2222'], 'user': ['operator'], 'service': ['ssh']}
  assert task_values.extract('Find exploits for proftpd 1.3.3c') == {
      'software': ['proftpd'], 'version': ['1.3.3c']}
  assert task_values.extract('Scan http://10.20.30.40:8081 with /usr/share/x/big.txt') == {
      'url': ['http://10.20.30.40:8081'], 'wordlist': ['/usr/share/x/big.txt']}
  assert task_values.present('port', '22', ['-p20-25'])
  assert task_values.present('url', 'http://a.lan', ['a.lan'])
  assert not task_values.present('port', '22', ['2222'])


def test_indicators_from_verdicts(toy_dir):
  commands = ['toy -l -l -p 1', 'toy -l -p 1', 'toy -q -l -p 1', 'Just do it now please ok']
  verdicts = [validator.validate('toy', 'Listen on port 1', c, spec_dir=toy_dir)
              for c in commands]
  values = indicators.compute(commands, verdicts)
  assert values['repeated_option_rate'] == 0.25 and values['prose_rate'] == 0.25
  assert values['unknown_option_rate'] == pytest.approx(1 / 8)  # 3 + 2 + 3 options written
  assert values['mean_option_count'] == pytest.approx(8 / 4)
  assert values['distinct_ratio'] == 1.0
  assert set(values) == set(indicators.NAMES)


def run_cli(args, stdin=''):
  return subprocess.run([sys.executable, str(ROOT / 'experiments' / 'validate_commands.py'),
                         *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
                        timeout=300)


def test_validate_commands_cli(tmp_path):
  lines = [{'tool': 'nmap', 'task': 'Detect service versions on 10.66.1.2',
            'command': 'nmap -sV 10.66.1.2'},
           {'tool': 'nmap', 'task': 'Detect service versions on 10.66.1.2',
            'command': 'nmap 10.66.1.2', 'intent_options': [['-sV']]}]
  result = run_cli(['--input=-', '--output=-'], ''.join(json.dumps(x) + '\n' for x in lines))
  assert result.returncode == 0, result.stderr
  out = [json.loads(line) for line in result.stdout.splitlines()]
  assert out[0] == {'ok': True, 'quality': 1.0, 'reasons': []}
  assert out[1]['reasons'] == ['intent_missing'] and out[1]['quality'] == 0.25
  for bad, message in (('{"tool": "nmap"}\n', "line 1: field 'task'"),
                       ('\n{not json\n', 'line 2: not valid JSON'),
                       ('{"tool": "vim", "task": "t", "command": "c"}\n', "unknown tool 'vim'")):
    result = run_cli([], bad)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1], result.stderr
