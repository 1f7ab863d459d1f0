"""Real quality of a phase's commands, and of the model on the held-out set.

`judge_rows` grades commands that a phase already generated (BEFORE/AFTER rows carry
their task's values and expected options from the bank); `evaluate_model` decodes the
held-out tasks greedily with the current weights and grades them. Both return flat
metrics (`quality`, `strict`, `quality/<tool>`, `strict/<tool>`, the indicators; for the
held-out tasks, which carry reference commands, also `nlc2cmd` and `nlc2cmd/<tool>`, the
NLC2CMD competition metric of `nlc2cmd.py`) and one row per command with its verdict (and
`nlc2cmd` score), for `rows/round_NNN_<phase>.jsonl`. Nothing here runs
a command: the validator only parses text.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from inversion_jax.decode.sampling import SamplingConfig
from inversion_jax.quality import indicators
from inversion_jax.quality import nlc2cmd
from inversion_jax.quality import validator
from inversion_jax.scoring import text as text_lib

# Bank slot names that are a validator role under another name.
_SLOT_ROLES = {'sqli_url': 'url'}


@dataclasses.dataclass(frozen=True)
class Graded:
  metrics: dict[str, float]
  rows: list[dict]


def bank_values(slots: dict) -> dict:
  """A bank task's slots as validator values."""
  return {_SLOT_ROLES.get(slot, slot): value for slot, value in slots.items()}


def grade(items: Sequence[dict], commands: Sequence[str],
          count_tokens: Callable[[str], int] | None = None) -> Graded:
  """Validates `commands[i]` for `items[i]` ({tool, task, intent_options, values}); items
  that all carry `references` (the held-out tasks) are also scored by NLC2CMD."""
  verdicts = [validator.validate(item['tool'], item['task'], command,
                                 intent_options=item.get('intent_options'),
                                 values=item.get('values'))
              for item, command in zip(items, commands, strict=True)]
  scores = {'quality': [v.quality for v in verdicts], 'strict': [float(v.ok) for v in verdicts]}
  if items and all(item.get('references') for item in items):
    scores['nlc2cmd'] = [nlc2cmd.score(command, item['references'])
                         for item, command in zip(items, commands)]
  metrics = {key: _mean(values) for key, values in scores.items()}
  metrics['num_graded'] = len(verdicts)
  for tool in sorted({item['tool'] for item in items}):
    mine = [i for i, item in enumerate(items) if item['tool'] == tool]
    metrics |= {f'{key}/{tool}': _mean([values[i] for i in mine])
                for key, values in scores.items()}
  for reason in validator.REASONS:
    metrics[f'reason/{reason}'] = _mean([reason in v.reasons for v in verdicts])
  metrics |= {f'indicator/{k}': v
              for k, v in indicators.compute(list(commands), verdicts, count_tokens).items()}
  rows = [{'verdict': v.to_json() | {'details': v.details}} for v in verdicts]
  if 'nlc2cmd' in scores:
    rows = [row | {'nlc2cmd': round(score, 6)} for row, score in zip(rows, scores['nlc2cmd'])]
  return Graded(metrics, rows)


def _mean(values) -> float:
  return float(np.mean(values)) if len(values) else 0.0


def items_from_tasks(tasks) -> list[dict]:
  """Validator items for bank tasks (their slots and expected options)."""
  return [{'tool': t.tool, 'task': t.text, 'values': bank_values(t.slots),
           'intent_options': [list(t.expected_options)] if t.expected_options else []}
          for t in tasks]


def subset(records: Sequence[dict], limit: int) -> list[dict]:
  """The first `limit` records taking tools in turn (stratified, deterministic); 0 = all."""
  if not limit or limit >= len(records):
    return list(records)
  by_tool: dict[str, list[dict]] = {}
  for record in sorted(records, key=lambda r: r['id']):
    by_tool.setdefault(record['tool'], []).append(record)
  out, depth = [], 0
  while len(out) < limit:
    for tool in sorted(by_tool):
      if depth < len(by_tool[tool]) and len(out) < limit:
        out.append(by_tool[tool][depth])
    depth += 1
  return out


def evaluate_model(generator, style, records: Sequence[dict], max_new_tokens: int,
                   count_tokens: Callable[[str], int] | None = None) -> Graded:
  """Greedy commands for the held-out `records`, graded; adds `seconds` and rows."""
  start = time.perf_counter()
  out = generator.generate([style.generation(r['tool'], r['task']) for r in records],
                           SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens),
                           seed=0, desc='held-out')
  commands = [text_lib.clean_command(c) for c in out.texts]
  graded = grade(records, commands, count_tokens)
  rows = [{'id': r['id'], 'tool': r['tool'], 'intent': r.get('intent'), 'task': r['task'],
           'raw_command': raw, 'command': c} | g
          for r, raw, c, g in zip(records, out.texts, commands, graded.rows)]
  metrics = graded.metrics | {'seconds': time.perf_counter() - start,
                              'tokens': int(sum(out.num_tokens))}
  return Graded(metrics, rows)
