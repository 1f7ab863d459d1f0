"""The NLC2CMD metric on the worked examples of its published definition, and on the tools'
option tables (one flag however it is written)."""

import pytest

from inversion_jax.quality import nlc2cmd


# The reference implementation's README examples (IBM/clai utils/metric/README.md).
@pytest.mark.parametrize('reference, predicted, expected', [
    ('find . -type f -ctime -3 | tail -n 5', 'find . -type f | tail -n 5', 0.75),
    ('df | grep /dev/disk0s2', 'df | grep diskpath', 1.0),  # Values are not scored.
    ("find . -regextype posix-egrep -regex '^.*/[a-z][^/]*$' -type f",
     "find . -type f -regextype posix-egrep -regex '^.*/[a-z][^/]*$'", 1.0),  # Flag order.
    ('mkdir directory', 'touch directory', -1.0),  # The wrong utility.
    ('df --total | tail -n 1', 'tail -n 1 | df --total', -1.0),  # Utility order matters.
])
def test_reference_readme_examples(reference, predicted, expected):
  assert nlc2cmd.command_score(predicted, reference) == pytest.approx(expected)


def test_excess_flags_example_on_the_flags_bashlint_read():
  # README example 5: `find / -EXdsx -name linux` against `find / -name linux` is 0.1666,
  # Bashlint having read -EXdsx as five flags of BSD find.
  predicted = nlc2cmd.Utility('find', frozenset({'-E', '-X', '-d', '-s', '-x', '-name'}))
  reference = nlc2cmd.Utility('find', frozenset({'-name'}))
  assert nlc2cmd.utility_score(predicted, reference) == pytest.approx(1 / 6)


def test_flag_score_definition():
  f = frozenset
  assert nlc2cmd.flag_score(f(), f()) == 1.0
  assert nlc2cmd.flag_score(f({'-a'}), f({'-a'})) == 1.0
  assert nlc2cmd.flag_score(f(), f({'-a'})) == -1.0
  assert nlc2cmd.flag_score(f({'-a', '-b'}), f({'-a'})) == 0.0  # (2 - 2) / 2
  assert nlc2cmd.flag_score(f({'-a', '-b', '-c'}), f({'-a'})) == pytest.approx(-1 / 3)
  # Disjoint sets go below -1 (the union counts both): -2 for one flag each, as in the
  # reference implementation; a matched utility then scores (1 - 2) / 2 = -0.5.
  assert nlc2cmd.flag_score(f({'-b'}), f({'-a'})) == -2.0
  assert nlc2cmd.flag_score(f({'-b', '-c'}), f({'-a'})) == pytest.approx(-3 / 2)


def test_exact_match_is_one():
  assert nlc2cmd.score('nmap -sV -p 22 10.1.2.3', ['nmap -sV -p 22 10.1.2.3']) == 1.0


def test_same_utility_without_flags():
  # The reference's one flag missed: S_F = -1, so (1 - 1) / 2 = 0.
  assert nlc2cmd.score('nmap 10.1.2.3', ['nmap -sV 10.1.2.3']) == 0.0
  assert nlc2cmd.score('nmap 10.1.2.3', ['nmap 10.1.2.3']) == 1.0


def test_partial_flag_overlap():
  # {-sV} vs {-sV, -p}: (2*1 - 2) / 2 = 0 -> 0.5.
  assert nlc2cmd.score('nmap -sV 10.1.2.3', ['nmap -sV -p 80 10.1.2.3']) == 0.5
  # {-sV, -O, -p} vs {-sV, -p}: (4 - 3) / 3 -> (1 + 1/3) / 2.
  assert nlc2cmd.score('nmap -sV -O -p 80 h', ['nmap -sV -p 80 h']) == pytest.approx(2 / 3)


def test_more_utilities_than_the_reference():
  # The extra segment is aligned with no utility: (1 + (-1)) / 2.
  assert nlc2cmd.score('nmap -sV h; rm -rf /tmp/x', ['nmap -sV h']) == 0.0
  assert nlc2cmd.score('nmap -sV h | tee a | grep open', ['nmap -sV h']) == pytest.approx(-1 / 3)


def test_fewer_utilities_than_the_reference():
  assert nlc2cmd.score('nc -l -p 8080', ['nc -l -p 8080 | nc h 80']) == 0.0


def test_wrong_tool_and_prose_score_minus_one():
  assert nlc2cmd.score('masscan -p80 10.0.0.0/8', ['nmap -p80 10.0.0.0/8']) == -1.0
  assert nlc2cmd.score('Here is the command you asked for', ['nmap -sV h']) == -1.0
  assert nlc2cmd.score('', ['nmap -sV h']) == -1.0
  assert nlc2cmd.score("nmap -sV 'h", ['nmap -sV h']) == -1.0  # Unbalanced quote.


def test_best_over_references():
  references = ['nmap -sV h', 'nmap -A h']
  assert nlc2cmd.score('nmap -A h', references) == 1.0
  assert nlc2cmd.score('nmap -sV h', references) == 1.0
  assert nlc2cmd.score('nmap -O h', references) == -0.5
  with pytest.raises(ValueError):
    nlc2cmd.score('nmap h', [])


@pytest.mark.parametrize('predicted', [
    'nmap -p80 h', 'nmap -p 80 h', 'nmap -p 443 h', 'sudo nmap -p 80 h > out.txt',
    '/usr/bin/nmap -p80 h'])
def test_one_flag_however_written_and_values_ignored(predicted):
  assert nlc2cmd.score(predicted, ['nmap -p 80 h']) == 1.0


def test_long_forms_aliases_and_bundles_are_canonical():
  assert nlc2cmd.score('sqlmap --url=http://h/?id=1 --batch', ['sqlmap -u http://h/?id=1 '
                                                              '--batch']) == 1.0
  assert nlc2cmd.score('nmap -sR h', ['nmap -sV h']) == 1.0  # -sR is documented as -sV.
  assert nlc2cmd.score('nc -lvnp 4444', ['nc -l -v -n -p 4444']) == 1.0
  assert nlc2cmd.score('netcat -l -p 4444', ['nc.traditional -l -p 4444']) == 1.0


def test_unknown_options_cost_overlap():
  assert nlc2cmd.score('nmap -sV --bogus h', ['nmap -sV h']) == 0.5


def test_gobuster_mode_counts_as_a_flag():
  reference = ['gobuster dir -u http://h/ -w words.txt']
  assert nlc2cmd.score('gobuster dir -u http://h/ -w words.txt', reference) == 1.0
  assert nlc2cmd.score('gobuster dns -d h -w words.txt', reference) < 0.5


def test_score_range():
  commands = ['nmap h', 'nmap -sV -sC -O -A --top-ports 10 h; ls -la', 'ls', 'nc -z h 1-9',
              'hydra -l u -P p.txt ssh://h', 'gobuster vhost -u http://h -w w.txt']
  for predicted in commands:
    for reference in commands:
      assert -1.0 <= nlc2cmd.command_score(predicted, reference) <= 1.0
