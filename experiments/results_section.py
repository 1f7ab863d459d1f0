"""The study's results block from its compare_runs JSON (numbers are read, not typed).

  python experiments/results_section.py benchmarks/study/compare.json \
      --readme=benchmarks/RESULTS.md

Replaces the text between `<!-- results:start -->` and `<!-- results:end -->` in
benchmarks/RESULTS.md (or the file given with --readme).
"""

import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.quality import task_stats  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('readme', 'benchmarks/RESULTS.md',
                    'The markdown file whose results block is replaced.')
flags.DEFINE_string('note', '', 'Markdown put under the table (the study state, the command).')

START, END = '<!-- results:start -->', '<!-- results:end -->'
# The original's published figures (its README / RESULTS.md: one run, one seed).
ORIGINAL = {'intrinsic score change (%)': ('+18.1', 'n/a'),
            'acceptance change (points)': ('60.7 -> 88.0 % (+27.3)', 'n/a'),
            'graded quality change (%)': ('-11 (undisclosed measure)', '-0.2')}
ROWS = ('intrinsic score change (%)', 'acceptance change (points)', 'train loss change',
        'graded quality change (%)', 'strict quality change (points)', 'NLC2CMD score change',
        'Goodhart gap (points)',
        'options/cmd change', 'unknown opt change', 'repeated opt change', 'prose change',
        'distinct change', 'tokens/cmd change')


def cell(measure: dict) -> str:
  if measure is None or measure.get('mean') is None:
    return 'n/a'
  text = f"{measure['mean']:+.2f}"
  if measure.get('ci_low') is not None:
    text += f" [{measure['ci_low']:+.2f}, {measure['ci_high']:+.2f}]"
  return text + f" (n={measure['n']})"


def section(result: dict, note: str) -> str:
  groups = result['groups']
  v1 = next((g for label, g in groups.items() if label.startswith('V1')), None)
  v2 = next((g for label, g in groups.items() if label.startswith('V2')), None)
  lines = ['| measure (base -> last round) | ours V1 | ours V2 | original V1 | original V2 |',
           '|---|---|---|---|---|']
  for row in ROWS:
    original = ORIGINAL.get(row, ('', ''))
    lines.append(f"| {row} | {cell(v1 and v1['measures'].get(row))} | "
                 f"{cell(v2 and v2['measures'].get(row))} | {original[0]} | {original[1]} |")
  warning = result['early_warning']
  lines += ['', 'Ours, run level: mean over seeds with a Student-t 95 % interval where n >= 2 '
            '(seeds only; the per-task table below carries the task variance); seeds '
            f"V1 {v1 and v1['seeds']}, V2 {v2 and v2['seeds']}. Label-free early warning against "
            + (f"the gold event (delta {warning['delta']}): " if 'delta' in warning else
               f"the gold monitor (tolerance {warning['tolerance']}, relative): ")
            + f"{warning['early_alarms']} "
            f"early alarm(s), precision {warning['precision']}, "
            f"{warning['runs_with_gold_alarm']} run(s) with a gold alarm, recall "
            f"{warning['recall']}, lead times {warning['lead_time_rounds'] or 'n/a'}.", '']
  if result.get('per_task'):  # Held-out measures per (task, seed), paired bootstrap.
    lines += [task_stats.markdown(result['per_task'])]
  return '\n'.join(lines) + ('\n' + note.strip() + '\n' if note else '')


@exit_on_user_error
def main(argv):
  if len(argv) != 2:
    raise UserError('give the compare_runs JSON, e.g. benchmarks/study/compare.json')
  path, readme = pathlib.Path(argv[1]), pathlib.Path(FLAGS.readme)
  if not path.is_file():
    raise UserError(f'{path} does not exist; run experiments/reproduce.sh --collect first')
  text = readme.read_text(encoding='utf-8')
  if START not in text or END not in text:
    raise UserError(f'{readme} has no {START} ... {END} block')
  body = section(json.loads(path.read_text(encoding='utf-8')), FLAGS.note)
  head, rest = text.split(START, 1)
  readme.write_text(head + START + '\n' + body + END + rest.split(END, 1)[1], encoding='utf-8')
  print(body)


if __name__ == '__main__':
  app.run(main)
