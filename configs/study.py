"""The reproduction study's arms: `--config=configs/study.py:v2`, or configs/study_v2.py.

The same settings as experiments/study/common.flags and its arm files (the original's set-up
and dose with the study's departures, reasons there): the original's preset with few-shot
prompts, 10 rounds of 50 tasks x 3 candidates, the threshold calibrated to the original's
60.7 % round-1 acceptance, every held-out task graded every round, AFTER in the last round
only. The seed and run name are overrides:
`--config=configs/study_v1.py --config.seed=1 --config.name=study_v1_s1`.
"""

from inversion_jax.loop import config_files

ARMS = {'v1': 'threshold', 'v2': 'reproducibility', 'r': 'random_matched'}


def get_config(arm: str = 'v1'):
  if arm not in ARMS:
    raise ValueError(f'unknown study arm {arm!r}; choose one of {", ".join(ARMS)}')
  config = config_files.base(preset='original')
  config.prompt_style = 'fewshot'
  config.target_acceptance = 0.607
  config.eval_every = 1
  config.eval_split = 'test'
  config.eval_tasks = 0
  config.on_goodhart = 'warn'
  config.after_every = 0
  config.filter = ARMS[arm]
  config.name = f'study_{arm}_s0'
  return config
