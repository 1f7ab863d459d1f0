"""quality_by_dose.py: held-out quality on a cumulative-examples axis, per arm."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from inversion_jax.errors import UserError
from inversion_jax.records import files, history

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'experiments' / 'study'))
import quality_by_dose  # noqa: E402


def rounds(examples, quality, base=0.2):
  out = [{'cycle': i + 1, 'metrics': {'train/num_examples': e, 'heldout/quality': q}}
         for i, (e, q) in enumerate(zip(examples, quality))]
  out[0]['metrics']['base/quality'] = base
  return out


def test_dose_curve_starts_at_the_base_model_and_accumulates_examples():
  examples, quality = quality_by_dose.dose_curve(rounds([10, 20, 5], [0.3, 0.25, 0.1]))
  np.testing.assert_array_equal(examples, [0, 10, 30, 35])
  np.testing.assert_allclose(quality, [0.2, 0.3, 0.25, 0.1])


def test_a_run_without_held_out_rounds_is_refused():
  history_ = rounds([10, 20], [0.3, 0.25])
  del history_[1]['metrics']['heldout/quality']
  with pytest.raises(UserError, match='heldout/quality'):
    quality_by_dose.dose_curve(history_)


def test_table_means_over_seeds_per_arm_and_round():
  curves = {'V2': [(0, np.array([0, 10, 30]), np.array([0.2, 0.3, 0.1])),
                   (1, np.array([0, 20, 50]), np.array([0.2, 0.1, 0.3]))]}
  text = quality_by_dose.table(curves)
  assert '| V2 | 1 | 15 | 0.200 |' in text and '| V2 | 2 | 40 | 0.200 |' in text


@pytest.mark.slow
def test_cli_writes_plot_and_table(tmp_path):
  for arm, filter_ in (('r', 'random_matched'), ('v2', 'reproducibility')):
    run = tmp_path / f'{arm}_s0'
    run.mkdir()
    files.write_json_atomic(run / history.PROGRESS_FILE, {
        'config': {'filter': filter_, 'seed': 0}, 'seed': 0,
        'history': rounds([10, 20], [0.3, 0.25])})
  output = tmp_path / 'out' / 'dose'
  done = subprocess.run([sys.executable, str(ROOT / 'experiments/study/quality_by_dose.py'),
                         str(tmp_path / 'r_s0'), str(tmp_path / 'v2_s0'), f'--output={output}'],
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert output.with_suffix('.png').stat().st_size > 0
  text = output.with_suffix('.md').read_text()
  assert '| R | 2 | 30 | 0.250 |' in text and '| V2 | 0 | 0 | 0.200 |' in text
  bad = subprocess.run([sys.executable, str(ROOT / 'experiments/study/quality_by_dose.py'),
                        str(tmp_path / 'absent')], capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and 'no progress.json' in bad.stderr and 'Traceback' not in bad.stderr
