"""The demo (`python3 dev.py run`): 2 short V1 rounds on the embedded SmolLM2-135M, ~5 min on a CPU.

The threshold is the study's calibrated one (0.16: the 40th percentile of the base model's
reconstruction scores, benchmarks/RESULTS.md), so a round trains on a real share of its 16 rows
instead of the 1 in 16 that the original's 0.5 (or 0.3) keeps at 135M. Real quality is graded
on 18 held-out tasks (2 per tool); the full set is `--config.eval_split=test
--config.eval_tasks=0`.
"""

from inversion_jax.loop import config_files


def get_config():
  config = config_files.base()
  config.cycles = 2
  config.tasks = 8
  config.candidates = 2
  config.max_new_tokens = 48
  config.threshold = 0.16
  config.eval_split = 'small'
  config.eval_tasks = 18
  config.name = 'demo'
  return config
