"""Runs experiments/self_improve.py but SIGKILLs itself at a chosen moment (resume tests).

  python tests/crash_driver.py PHASE N -- <driver flags>

PHASE 'generate': killed at the N-th call of Generator.generate (N counts from 1);
PHASE 'train': killed when the N-th training batch is being built (mid-epoch);
PHASE 'commit': killed just after the N-th round's checkpoint commits (before progress.json).
Nothing is cleaned up: this is the hard kill of a real interruption.
"""

import os
import runpy
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inversion_jax.decode import generation  # noqa: E402
from inversion_jax.train import checkpointing, training  # noqa: E402


def kill_on_call(owner, name, n):
  original = getattr(owner, name)
  calls = [0]

  def wrapped(*args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
      os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

  setattr(owner, name, wrapped)


def kill_after_call(owner, name, n):
  original = getattr(owner, name)
  calls = [0]

  def wrapped(*args, **kwargs):
    result = original(*args, **kwargs)
    calls[0] += 1
    if calls[0] == n:
      os.kill(os.getpid(), signal.SIGKILL)
    return result

  setattr(owner, name, wrapped)


def main():
  phase, n = sys.argv[1], int(sys.argv[2])
  if phase == 'commit':
    kill_after_call(checkpointing.RoundCheckpointer, 'save', n)
  else:
    target = {'generate': (generation.Generator, 'generate'),
              'train': (training.Trainer, '_device_batch')}[phase]
    kill_on_call(*target, n)
  driver = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'experiments', 'self_improve.py')
  sys.argv = [driver] + sys.argv[sys.argv.index('--') + 1:]
  runpy.run_path(driver, run_name='__main__')


if __name__ == '__main__':
  main()
