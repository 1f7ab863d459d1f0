"""TensorBoard event files of a run: every round's metrics, the settings, example rows.

Written with tensorboardX, which writes TensorBoard's event format without TensorFlow (CLU's
metric writers need TensorFlow, or torch for their PyTorch writer; torch is only a test
dependency here). `tensorboard --logdir runs/` then shows each run beside the others: scalars
under their `phase/metric` names (step = round), the run's settings on the HParams tab and
as text, each round's example rows as a text table.
"""

import json
import math
import pathlib

import tensorboardX
from tensorboardX.summary import hparams as hparams_summary

# Metrics the HParams tab lists beside the settings (any scalar of the run may be added there).
HPARAM_METRICS = ('after/mean_score', 'after/acceptance_rate', 'heldout/quality',
                  'train/final_loss')


def scalars(record: dict) -> dict[str, float]:
  """The round's flat `phase/metric` numbers and `time/<stage>` seconds (finite numbers only)."""
  values = dict(record.get('metrics') or {})
  values |= {f'time/{stage}': seconds for stage, seconds in (record.get('timings') or {}).items()}
  return {key: float(value) for key, value in values.items()
          if isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value)}


def examples_table(rows: list[dict]) -> str:
  """Example rows as a Markdown table (TensorBoard's text tab renders it)."""
  columns = ('tool', 'task', 'command', 'reconstruction', 'rating', 'score', 'kept')
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    cells = (_cell(row.get(column)) for column in columns)
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _cell(value) -> str:
  if isinstance(value, float):
    value = f'{value:.3f}'
  return str('' if value is None else value).replace('|', '\\|').replace('\n', ' ')


def hparam_values(config: dict) -> dict:
  """Settings as the HParams plugin takes them: numbers, strings and booleans."""
  return {key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
          for key, value in config.items()}


class RunSummaries:
  """One run's event writer (tensorboardX); call `close` to flush."""

  def __init__(self, directory: str | pathlib.Path):
    self.directory = pathlib.Path(directory)
    self._writer = tensorboardX.SummaryWriter(logdir=str(self.directory), flush_secs=30)

  def write_config(self, config: dict) -> None:
    """The settings on the HParams tab and as a JSON text block."""
    for summary in hparams_summary(hparam_values(config), dict.fromkeys(HPARAM_METRICS, 0.0)):
      self._writer.file_writer.add_summary(summary)
    text = json.dumps(config, indent=2, sort_keys=True)
    self._writer.add_text('config', '    ' + text.replace('\n', '\n    '), 0)

  def write_round(self, record: dict) -> None:
    step = int(record['cycle'])
    for tag, value in scalars(record).items():  # The base model's evaluation is round 0.
      self._writer.add_scalar(tag, value, 0 if tag.startswith('base/') else step)
    if record.get('examples'):
      self._writer.add_text('examples', examples_table(record['examples']), step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
