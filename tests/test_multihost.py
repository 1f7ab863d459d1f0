"""Two local CPU processes joined by `jax.distributed` (2 devices each, one 4-device mesh)
give what one process gives: a scoring batch, a train step, a 1-round run; only process 0
writes the run directory.

Tolerances: generated texts equal; logits 1e-4 relative; train loss 1e-5 relative and
adapters 1e-4 / 1e-6 absolute (float32 sums in another order); the run's intrinsic and
held-out metrics equal to 1e-6 (greedy held-out rows and sampled rows are per-row keyed).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from inversion_jax.records import history
from tests.tiny_run import TINY_FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / 'tests' / 'multihost_worker.py'


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def env():
  return dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')


def run_pair(commands, timeout=900):
  """Starts the processes together, waits for all; fails with their output if any failed."""
  procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT, env=env()) for c in commands]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=timeout)[0])
  finally:
    for proc in procs:
      proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  return outputs


@pytest.mark.slow
def test_two_processes_score_and_train_like_one(tiny_gguf, tmp_path):  # noqa: F811
  port = free_port()
  run_pair([[sys.executable, str(WORKER), str(i), str(port), tiny_gguf, str(tmp_path)]
            for i in range(2)] + [[sys.executable, str(WORKER), '-1', '0', tiny_gguf,
                                   str(tmp_path)]])
  one = np.load(tmp_path / 'process_-1.npz')
  assert int(one['processes']) == 1
  for process in range(2):
    got = np.load(tmp_path / f'process_{process}.npz')
    assert int(got['processes']) == 2 and int(got['devices']) == 4
    assert list(got['greedy']) == list(one['greedy'])
    assert list(got['sampled']) == list(one['sampled'])
    np.testing.assert_allclose(got['logits'], one['logits'], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got['loss'], one['loss'], rtol=1e-5)
    for name in one.files:
      if name.startswith('lora_'):
        np.testing.assert_allclose(got[name], one[name], rtol=1e-4, atol=1e-6)


def run_flags(tiny_gguf, output, name):  # noqa: F811
  flags = TINY_FLAGS | dict(cycles=1, model=tiny_gguf, output=str(output), name=name,
                            eval_every=1, eval_split='small', eval_tasks=9)
  return [f'--{k}={v}' for k, v in flags.items()] + ['--parallel=mesh']


@pytest.mark.slow
def test_a_two_process_round_equals_one_process(tiny_gguf, tmp_path):  # noqa: F811
  driver = [sys.executable, str(ROOT / 'experiments' / 'self_improve.py')]
  port = free_port()
  two = [driver + run_flags(tiny_gguf, tmp_path, 'two') + [
      '--num_devices=2', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
      f'--process_id={i}'] for i in range(2)]
  one = driver + run_flags(tiny_gguf, tmp_path, 'one') + ['--num_devices=1']
  outputs = run_pair(two + [one])
  assert 'results:' in outputs[0] and 'results:' not in outputs[1]  # Only process 0 prints.
  metrics = {}
  for name in ('one', 'two'):
    progress = json.loads((tmp_path / name / 'progress.json').read_text())
    metrics[name] = history.rounds_of(progress)[0]['metrics']
    assert (tmp_path / name / 'checkpoints' / '1').is_dir()
    assert (tmp_path / name / 'run_config.json').exists()
  for key, value in metrics['one'].items():
    if isinstance(value, float) and not key.startswith(('time', 'train/')):
      assert metrics['two'][key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
  assert metrics['two']['train/final_loss'] == pytest.approx(
      metrics['one']['train/final_loss'], rel=1e-5)
