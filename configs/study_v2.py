"""The study's arm V2: the reproducibility filter at the author's settings
(m = 2, similarity 0.6, weights 0.6 / 0.4) over the calibrated threshold.

  python experiments/self_improve.py --config=configs/study_v2.py --config.seed=1 \
      --config.name=study_v2_s1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  # pylint: disable=wrong-import-position


def get_config():
  return study.get_config('v2')
