"""The reproduction study's arms: `--config=configs/study.py:v2` or configs/study_v2.py.

As experiments/reproduce.sh runs them today: 8 rounds of 8 tasks x 3 candidates, threshold
0.16 (the 40th percentile of the base model's scores, fixed before any run), 100 new tokens,
the 36-task held-out split every round, the monitor on warn. The seed is an override:
`--config=configs/study_v1.py --config.seed=1 --config.name=study_threshold_s1`.

TODO(study): the study's new settings (the original's dose, target acceptance) are being
written as flag files under experiments/study/; when they land, set the same values here.
"""

from inversion_jax import config_files


ARMS = {'v1': 'threshold', 'v2': 'reproducibility', 'r': 'random_matched'}


def get_config(arm: str = 'v1'):
  if arm not in ARMS:
    raise ValueError(f'unknown study arm {arm!r}; choose one of {", ".join(ARMS)}')
  filter_name = ARMS[arm]
  config = config_files.base()
  config.cycles = 8
  config.tasks = 8
  config.candidates = 3
  config.threshold = 0.16
  config.max_new_tokens = 100
  config.eval_split = 'small'
  config.on_goodhart = 'warn'
  config.filter = filter_name
  config.name = f'study_{filter_name}_s0'
  return config
