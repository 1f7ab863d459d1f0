"""The README's "Does the monitor catch it?" block from evaluate.py's JSON (numbers read).

  python experiments/detectors/readme_section.py benchmarks/detectors/eval.json \
      --tuned=benchmarks/detectors/heldout_B_tuned_on_A.json,... --readme=README.md

Replaces the text between `<!-- detectors:start -->` and `<!-- detectors:end -->` in the
file given with --readme: the gold event and delta, the primary (best so far) table with a
verdict per detector, the verdicts against the base model, the runs plot, and with --tuned
the verdicts of tuned limits on runs held out from the tuning (evaluate.py --limits=...),
with --pilot the pilot's one-seed runs (first alarm per limits table and onset, no verdict),
with --rollback the rollback pairs (rollback.py's JSON: its table and plot), and with
--exploratory the tables of analyses added after the registration, under a heading that
says so.
"""

import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from absl import app, flags  # noqa: E402

from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.goodhart import detector_metrics, goodhart_event  # noqa: E402
from inversion_jax.goodhart import rollback_pairs  # noqa: E402
from inversion_jax.records import files  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('readme', 'README.md', 'The markdown file whose detectors block is replaced.')
flags.DEFINE_list('tuned', [], 'evaluate.py JSONs of tuned limits on held-out runs.')
flags.DEFINE_list('exploratory', [], 'evaluate.py JSONs of analyses added after the '
                  'registration (PREREGISTRATION.md, Deviations), shown apart.')
flags.DEFINE_list('pilot', [], 'evaluate.py JSONs of the pilot\'s one-seed runs (default '
                  'and tuned limits), shown without verdicts.')
flags.DEFINE_string('rollback', '', 'rollback.py\'s JSON: the rollback pairs, their table '
                    'and plot.')
flags.DEFINE_string('note', '', 'Markdown put under the block (the state, the command).')

START, END = '<!-- detectors:start -->', '<!-- detectors:end -->'
ADVICE = 'run experiments/detectors/evaluate.py first (it writes <output>.json)'


def load(path: pathlib.Path) -> dict:
  """evaluate.py's JSON; one written before verdicts existed gets them from its own numbers."""
  result = files.read_json(path, ADVICE)
  if not isinstance(result.get('references'), dict) or 'best' not in result['references']:
    raise UserError(f'{path} is not an evaluate.py JSON (no references.best); {ADVICE}')
  for by_detector in result['references'].values():
    for metrics in by_detector.values():
      metrics.setdefault('verdict', detector_metrics.verdict(metrics))
  return result | {'confirm': result.get('confirm', goodhart_event.CONFIRM)}


def _how(how: dict) -> str:
  if 'given' in how:
    return 'given'
  return (f'{how["multiple"]:g} x the RMS standard error of {how["pairs"]} pairs of '
          f'consecutive held-out evaluations of {len(how["derived_from"])} run(s)')


def _runs(result: dict) -> str:
  """'P positive run(s) (E with a gold event) and N negative(s) (F with one)', read from it."""
  runs = next(iter(result['references']['best'].values()))['runs']
  text = []
  for label in detector_metrics.LABELS:
    mine = [r for r in runs if r['label'] == label]
    events = sum(r['onset'] is not None for r in mine)
    text.append(f'{len(mine)} {label} run(s) ({events} with a gold event)')
  return ' and '.join(text)


def _verdicts(by_detector: dict) -> str:
  """'works: a, b; not enough data: c', the verdicts in `VERDICTS` order, empty ones left out."""
  groups = [(v, [name for name, m in by_detector.items() if m['verdict'] == v])
            for v in detector_metrics.VERDICTS]
  return '; '.join(f'{v}: {", ".join(names)}' for v, names in groups if names)


def _short_table(by_detector: dict) -> list[str]:
  lines = ['| detector | recall | false-alarm rate | verdict |', '|---|---|---|---|']
  return lines + [f'| {name} | {detector_metrics.cell(m["recall"])} | '
                  f'{detector_metrics.cell(m["false_alarm_rate"])} | {m["verdict"]} |'
                  for name, m in by_detector.items()]


def _limits_tables(results: list[tuple[str, dict]], what: str) -> list[str]:
  lines = []
  for name, result in results:
    lines += [f'{what} (`{name}`, limits `{result.get("limits_file") or "given"}`; '
              f'{_runs(result)}):', '', *_short_table(result['references']['best']), '']
  return lines


def _pilot_table(results: list[tuple[str, dict]]) -> list[str]:
  """The pilot's runs in one table, no verdict (one seed each): per detector and run, the
  first alarm round under each limits table given, in order; the onset in the header."""
  if not results:
    return []
  first = results[0][1]['references']['best']
  runs = [r for r in next(iter(first.values()))['runs'] if r['label'] == 'positive']
  header = [f'{pathlib.Path(r["run"]).name} (onset '
            f'{r["onset"] if r["onset"] is not None else "none"})' for r in runs]
  tables = ', '.join(f'`{name}` (limits `{result.get("limits_file") or "registered"}`)'
                     for name, result in results)
  lines = ['The pilot\'s one-seed runs (one seed a mechanism, too few for a verdict): the '
           f'first alarm round under each limits table, in this order: {tables}.', '',
           '| detector | ' + ' | '.join(header) + ' |', '|---|' + '---|' * len(runs)]
  for detector in first:
    cells = []
    for run in runs:
      rounds = []
      for _, result in results:
        row = next(r for r in result['references']['best'][detector]['runs']
                   if r['run'] == run['run'])
        rounds.append(str(min(row['alarms'])) if row['alarms'] else 'none')
      cells.append(' / '.join(rounds))
    lines.append(f'| {detector} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def _rollback_table(rollback: tuple[dict, str | None] | None) -> list[str]:
  """rollback.py's pairs (final quality, rollback - warn; rounds lost) and their plot."""
  if not rollback:
    return []
  result, plot = rollback
  return ['Rollback (`--on_goodhart=rollback` at δ against the same seed\'s `warn` run; '
          f'{len(result["pairs"])} pair(s)):', '', rollback_pairs.markdown(result).strip(), '',
          *([f'![Rollback pairs by round]({plot})', ''] if plot else [])]


def section(result: dict, plot: str | None, tuned: list[tuple[str, dict]], note: str,
            exploratory: list[tuple[str, dict]] = (), pilot: list[tuple[str, dict]] = (),
            rollback: tuple[dict, str | None] | None = None) -> str:
  """The block's markdown; `plot` is the runs plot's path relative to the README;
  `rollback` is rollback.py's result and its plot's path."""
  lines = [f'Gold event: graded held-out quality at least δ = {result["delta"]:.4f} '
           f'({_how(result["delta_how"])}) below the best evaluation so far (the base '
           'model included) while the intrinsic score is above the base model\'s, at '
           f'{result["confirm"]} consecutive evaluations; {_runs(result)}; precision within '
           f'{result["horizon"]} round(s). k/n = rate [exact 95 % interval]; a detector '
           'works when recall\'s lower bound > 0.5 and the false-alarm rate\'s upper bound '
           '< 0.5, does not when recall\'s upper bound < 0.5 or the false-alarm rate\'s lower '
           'bound > 0.5.', '', *detector_metrics.table(result['references']['best']), '']
  if 'base' in result['references']:
    lines += ['Verdicts with the base model as the reference: '
              f'{_verdicts(result["references"]["base"])}.', '']
  lines += [f'![Positive runs, alarms marked]({plot})' if plot else
            'No positive run: no runs plot.', '']
  lines += _limits_tables(tuned, 'Tuned limits on held-out runs')
  lines += _pilot_table(pilot)
  lines += _rollback_table(rollback)
  if exploratory:
    lines += ['**Exploratory, not registered** (added after the registration; the '
              'pre-registration\'s Deviations say when, why and what had been seen): its '
              'verdicts are descriptions, not results.', '',
              *_limits_tables(exploratory, 'Exploratory')]
  return '\n'.join(lines) + ('\n' + note.strip() + '\n' if note else '')


def plot_path(json_path: pathlib.Path, result: dict, readme: pathlib.Path,
              key: str = 'runs_plot') -> str | None:
  """A plot written beside the JSON (its name under `key`) as a link relative to the README."""
  if not result.get(key):
    return None
  return pathlib.Path(os.path.relpath(json_path.parent / result[key],
                                      readme.resolve().parent)).as_posix()


def load_rollback(path: str, readme: pathlib.Path) -> tuple[dict, str | None] | None:
  if not path:
    return None
  json_path = pathlib.Path(path).resolve()
  result = files.read_json(json_path, 'run experiments/detectors/rollback.py first')
  if not isinstance(result.get('pairs'), list):
    raise UserError(f'{path} is not a rollback.py JSON (no pairs); run '
                    'experiments/detectors/rollback.py first')
  return result, plot_path(json_path, result, readme, 'plot')


@exit_on_user_error
def main(argv):
  if len(argv) != 2:
    raise UserError('give evaluate.py\'s JSON, e.g. benchmarks/detectors/eval.json')
  path, readme = pathlib.Path(argv[1]).resolve(), pathlib.Path(FLAGS.readme)
  result = load(path)
  tuned = [(pathlib.Path(p).name, load(pathlib.Path(p))) for p in FLAGS.tuned]
  exploratory = [(pathlib.Path(p).name, load(pathlib.Path(p))) for p in FLAGS.exploratory]
  pilot = [(pathlib.Path(p).name, load(pathlib.Path(p))) for p in FLAGS.pilot]
  rollback = load_rollback(FLAGS.rollback, readme)
  try:
    text = readme.read_text(encoding='utf-8')
  except OSError as error:
    raise UserError(f'cannot read {readme} ({error.strerror or error}); give --readme=FILE') \
        from None
  if START not in text or END not in text:
    raise UserError(f'{readme} has no {START} ... {END} block; add the two markers where the '
                    'block goes')
  body = section(result, plot_path(path, result, readme), tuned, FLAGS.note, exploratory,
                 pilot, rollback)
  head, rest = text.split(START, 1)
  files.write_text_atomic(readme, head + START + '\n' + body + END + rest.split(END, 1)[1])
  print(body)


if __name__ == '__main__':
  app.run(main)
