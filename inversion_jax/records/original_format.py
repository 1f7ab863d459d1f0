"""The original's output names, written beside ours so a script made for its files reads ours.

The original (`intrinsic_self_improvement.py`) wrote `progress.json` as
`{last_completed_cycle, timestamp, history: {cycles, total_generated, total_accepted, config}}`
and the results file as that `history` block; each cycle had `before` / `after`
`{total_generated, accepted, acceptance_rate, mean_score}`, an `improvement` block and
`example_before` / `example_after` (its first 3 rows). These functions build those fields
from our flat metrics and rows; nothing here is measured anew.
"""

import datetime

EXAMPLES = 3

# The original's SelfImprovementConfig names -> our RunConfig fields.
CONFIG_NAMES = {
    'model_name': 'model', 'num_candidates_per_task': 'candidates',
    'generation_temperature': 'temperature', 'similarity_threshold': 'threshold',
    'learning_rate': 'lr', 'num_epochs': 'epochs', 'batch_size': 'batch_size',
    'num_cycles': 'cycles', 'tasks_per_cycle': 'tasks',
}


def timestamp() -> str:
  return datetime.datetime.now().isoformat()


def phase_block(flat: dict, phase: str) -> dict:
  """{total_generated, accepted, acceptance_rate, mean_score} of one phase."""
  return {'total_generated': int(flat.get(f'{phase}/num_candidates', 0)),
          'accepted': int(flat.get(f'{phase}/num_accepted', 0)),
          'acceptance_rate': flat.get(f'{phase}/acceptance_rate'),
          'mean_score': flat.get(f'{phase}/mean_score')}


def example_rows(rows: list[dict]) -> list[dict]:
  """The original's example rows: tool, task, command, reconstructed_task, intrinsic_score."""
  return [{'tool': r['tool'], 'task': r['task'], 'command': r['command'],
           'reconstructed_task': r.get('reconstruction', ''), 'intrinsic_score': r['score']}
          for r in rows[:EXAMPLES]]


def cycle_fields(flat: dict, before_rows: list[dict], after_rows: list[dict]) -> dict:
  """The original's per-cycle fields (without `cycle`, which ours already has)."""
  before, after = phase_block(flat, 'before'), phase_block(flat, 'after')
  improvement = {
      'before_mean_score': before['mean_score'], 'after_mean_score': after['mean_score'],
      'score_improvement': _minus(after['mean_score'], before['mean_score']),
      'before_acceptance_rate': before['acceptance_rate'],
      'after_acceptance_rate': after['acceptance_rate'],
      'acceptance_improvement': _minus(after['acceptance_rate'], before['acceptance_rate']),
  }
  return {'timestamp': timestamp(), 'before': before, 'after': after,
          'improvement': improvement, 'example_before': example_rows(before_rows),
          'example_after': example_rows(after_rows)}


def config_block(run_config: dict) -> dict:
  """Our settings plus the original's names for those it had (and its output_dir)."""
  named = {name: run_config.get(ours) for name, ours in CONFIG_NAMES.items()}
  named['output_dir'] = f'{run_config.get("output")}/{run_config.get("name")}'
  return dict(run_config) | named


def history_block(run_config: dict, rounds: list[dict]) -> dict:
  """The original's `history`: cycles, total_generated, total_accepted, config."""
  def total(key):
    return sum(int(r.get(phase, {}).get(key, 0)) for r in rounds for phase in ('before', 'after'))

  return {'cycles': rounds, 'total_generated': total('total_generated'),
          'total_accepted': total('accepted'), 'config': config_block(run_config)}


def _minus(a, b):
  return None if a is None or b is None else a - b
