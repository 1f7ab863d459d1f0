"""experiments/benchmark_signals.py on a tiny random model."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_benchmark_signals_times_both_ways_of_kl(tiny_gguf, tmp_path):
  """benchmark_signals.py (by its CLI: its flags would clash with other scripts'): per
  round the former way's and the probe's seconds and tokens; bad input is one line."""
  script = [sys.executable, str(ROOT / 'experiments' / 'benchmark_signals.py'),
            f'--model={tiny_gguf}']
  out = tmp_path / 'kl.json'
  done = subprocess.run(script + ['--rounds=2', '--tasks=3', f'--output_json={out}'],
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(out.read_text())
  assert result['probe_prompts'] == 3 and [r['round'] for r in result['rounds']] == [1, 2]
  for r in result['rounds']:
    assert r['peer_s'] > 0 and r['ours_s'] > 0 and r['ours_tokens'] > 0
    assert r['peer_tokens'] > r['ours_tokens']  # Two models on 3 fresh prompts, one on 3.
  bad = subprocess.run(script + ['--rounds=0'], capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and 'must be >= 1' in bad.stderr and 'Traceback' not in bad.stderr

