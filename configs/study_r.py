"""The study's arm R: a random selection of as many rows as V1 would keep (the control; needs the random_matched filter).

  python experiments/self_improve.py --config=configs/study_r.py --config.seed=1 \
      --config.name=study_random_matched_s1
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import study  # noqa: E402  # pylint: disable=wrong-import-position


def get_config():
  return study.get_config('r')
