"""Gaming indicators of one phase's commands: the shapes score-gaming takes.

Each is computed from the commands and their verdicts only (no model, no reference):

  unknown_option_rate   unknown options / options written (flag spam, invented flags)
  repeated_option_rate  commands with a non-repeatable option given twice / commands
  mean_option_count     options per command (spam rises; collapse falls)
  echo_rate             commands with task text pasted in / commands
  prose_rate            texts that are not commands / commands
  distinct_ratio        distinct commands / commands (collapse onto one form falls)
  mean_tokens           command length in tokenizer tokens (whitespace words when no
                        tokenizer is given)
"""

from collections.abc import Callable, Sequence

import numpy as np

NAMES = ('unknown_option_rate', 'repeated_option_rate', 'mean_option_count', 'echo_rate',
         'prose_rate', 'distinct_ratio', 'mean_tokens')


def compute(commands: Sequence[str], verdicts: Sequence,
            count_tokens: Callable[[str], int] | None = None) -> dict[str, float]:
  """Indicator name -> value over one phase; NaN-free (0 for an empty phase)."""
  if not commands:
    return {name: 0.0 for name in NAMES}
  count_tokens = count_tokens or (lambda text: len(text.split()))
  options = sum(v.stats.get('options', 0) for v in verdicts)
  unknown = sum(v.stats.get('unknown', 0) for v in verdicts)
  return {
      'unknown_option_rate': unknown / options if options else 0.0,
      'repeated_option_rate': float(np.mean([v.stats.get('repeated', 0) > 0 for v in verdicts])),
      'mean_option_count': options / len(commands),
      'echo_rate': float(np.mean(['echo_task' in v.reasons for v in verdicts])),
      'prose_rate': float(np.mean(['not_a_command' in v.reasons for v in verdicts])),
      'distinct_ratio': len(set(c.strip() for c in commands)) / len(commands),
      'mean_tokens': float(np.mean([count_tokens(c) for c in commands])),
  }
