"""The NLC2CMD score carried beside strict and graded: grading, round records, summary,
report and plot."""

from inversion_jax.goodhart import metrics
from inversion_jax.quality import evaluation
from inversion_jax.records import console
from inversion_jax.records import history, report

ITEMS = [{'tool': 'nmap', 'task': 'Identify the software and versions listening on 172.31.9.14',
          'values': {'host': '172.31.9.14'}, 'intent_options': [['-sV'], ['-A']],
          'references': ['nmap -sV 172.31.9.14', 'nmap -A 172.31.9.14']},
         {'tool': 'masscan', 'task': 'Sweep 10.9.0.0/16 for port 8443 at 2000 packets per second',
          'values': {'cidr': '10.9.0.0/16', 'ports': '8443', 'rate': '2000'},
          'intent_options': [],
          'references': ['masscan -p8443 --rate 2000 10.9.0.0/16']}]


def test_grade_scores_nlc2cmd_when_every_item_has_references():
  graded = evaluation.grade(ITEMS, ['nmap -A 172.31.9.14', 'nmap -p8443 10.9.0.0/16'])
  assert graded.metrics['nlc2cmd/nmap'] == 1.0 and graded.metrics['nlc2cmd/masscan'] == -1.0
  assert graded.metrics['nlc2cmd'] == 0.0
  assert [row['nlc2cmd'] for row in graded.rows] == [1.0, -1.0]
  for key in ('quality', 'strict'):
    assert f'{key}/nmap' in graded.metrics and f'{key}/masscan' in graded.metrics


def test_grade_without_references_has_no_nlc2cmd():
  items = [{k: v for k, v in item.items() if k != 'references'} for item in ITEMS]
  graded = evaluation.grade(items, ['nmap -A 172.31.9.14', 'nmap -p8443 10.9.0.0/16'])
  assert not any(k.startswith('nlc2cmd') for k in graded.metrics)
  assert all('nlc2cmd' not in row for row in graded.rows)


def _rounds():
  rounds = []
  for cycle, (quality, nlc) in enumerate([(0.40, 0.10), (0.35, 0.30)], 1):
    values = {'quality': quality, 'strict': 0.2, 'nlc2cmd': nlc, 'quality/nmap': quality,
              'strict/nmap': 0.2, 'nlc2cmd/nmap': nlc, 'num_graded': 9}
    record = {'cycle': cycle, 'metrics': metrics.flatten('heldout', values)
              | {'before/mean_score': 0.25, 'after/mean_score': 0.3}}
    if cycle == 1:
      record['metrics'] |= metrics.flatten('base', values | {'quality': 0.5, 'nlc2cmd': -0.2})
    rounds.append(record)
  return rounds


def test_summary_table_and_report_show_nlc2cmd(tmp_path):
  rounds = _rounds()
  summary = history.summarize(rounds)
  assert summary['heldout_nlc2cmd_first'] == -0.2 and summary['heldout_nlc2cmd_last'] == 0.3
  run = history.RunHistory({'name': 'x'}, 0, rounds)
  assert 'NLC2CMD score' in console.format_summary(run)
  assert 'NLC2CMD score' in console.format_round_table(rounds[1], rounds[0])
  text = report.markdown({'name': 'x'}, rounds)
  assert '| held-out NLC2CMD score | -0.200 | 0.300 | +0.500 |' in text
  header = next(line for line in text.splitlines() if line.startswith('| round | score before'))
  separator = text.splitlines()[text.splitlines().index(header) + 1]
  assert 'held-out NLC2CMD score' in header and header.count('|') == separator.count('|')
  assert '| nmap | 0.400 (round 0) -> 0.350 (round 2) | ' in text
  assert report.plot(rounds, tmp_path / 'plot.png').stat().st_size > 0
