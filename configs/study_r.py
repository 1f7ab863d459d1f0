"""The study's arm R, the control: as many candidates as the calibrated threshold would
keep, drawn at random (needs the random_matched filter).

  python experiments/self_improve.py --config=configs/study_r.py --config.seed=1 \
      --config.name=study_r_s1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  # pylint: disable=wrong-import-position


def get_config():
  return study.get_config('r')
