"""The study's arm V1: the original's threshold filter, at the calibrated threshold.

  python experiments/self_improve.py --config=configs/study_v1.py --config.seed=1 \
      --config.name=study_v1_s1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  # pylint: disable=wrong-import-position


def get_config():
  return study.get_config('v1')
