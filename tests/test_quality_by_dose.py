"""quality_by_dose.py: held-out quality on a cumulative-examples axis, per arm (its CLI: the
script's absl flags would clash with other scripts' if it were imported beside them)."""

import pathlib
import subprocess
import sys

import pytest

from inversion_jax.records import files, history

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'experiments' / 'study' / 'quality_by_dose.py'


def rounds(examples, quality, base=0.2):
  out = [{'cycle': i + 1, 'metrics': {'train/num_examples': e, 'heldout/quality': q}}
         for i, (e, q) in enumerate(zip(examples, quality))]
  out[0]['metrics']['base/quality'] = base
  return out


def write(root, name, filter_, seed, history_):
  run = root / name
  run.mkdir()
  files.write_json_atomic(run / history.PROGRESS_FILE, {
      'config': {'filter': filter_, 'seed': seed}, 'seed': seed, 'history': history_})
  return str(run)


def dose(*args):
  return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                        text=True, timeout=300)


@pytest.mark.slow
def test_quality_by_examples_so_far_per_arm_and_its_refusals(tmp_path):
  runs = [write(tmp_path, 'r_s0', 'random_matched', 0, rounds([10, 20, 5], [0.3, 0.25, 0.1])),
          write(tmp_path, 'v2_s0', 'reproducibility', 0, rounds([10, 30], [0.3, 0.1])),
          write(tmp_path, 'v2_s1', 'reproducibility', 1, rounds([20, 50], [0.1, 0.3]))]
  output = tmp_path / 'out' / 'dose'
  done = dose(*runs, f'--output={output}')
  assert done.returncode == 0, done.stderr
  assert output.with_suffix('.png').stat().st_size > 0
  text = output.with_suffix('.md').read_text()
  # Round 0 is the base model; examples accumulate; V2's two seeds are averaged.
  assert '| R | 0 | 0 | 0.200 |' in text and '| R | 3 | 35 | 0.100 |' in text
  assert '| V2 | 1 | 15 | 0.200 |' in text and '| V2 | 2 | 55 | 0.200 |' in text
  lacking = rounds([10, 20], [0.3, 0.25])
  del lacking[1]['metrics']['heldout/quality']
  bad = write(tmp_path, 'v1_s0', 'threshold', 0, lacking)
  for args, message in (([bad], 'heldout/quality'), ([tmp_path / 'absent'], 'no progress.json'),
                        ([], 'give run directories')):
    refused = dose(*args, f'--output={output}')
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    assert 'Traceback' not in refused.stderr
