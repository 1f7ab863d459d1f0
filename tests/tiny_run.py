"""Shared pieces of the tests that run the loop on a tiny random model."""

import json
import pathlib
import subprocess
import sys

from inversion_jax.loop import experiment
from inversion_jax.nn.config import ModelConfig
from inversion_jax.records import history
from tests import tiny_checkpoints

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER = ROOT / 'experiments' / 'self_improve.py'
TINY_FLAGS = dict(cycles=2, tasks=3, candidates=2, threshold=0.0, max_new_tokens=8,
                  lora_rank=4, max_batch=8, eval_every=0)


def write_tiny_gguf(path: pathlib.Path) -> str:
  """A tiny random Llama with a byte-level BPE tokenizer, as a GGUF file."""
  config = ModelConfig.tiny(vocab_size=266, max_seq_len=2048, tie_embeddings=True)
  weights = tiny_checkpoints.random_hf_weights(config, seed=0)
  weights = {k: 0.2 * v if 'norm' not in k else 1 + 0 * v for k, v in weights.items()}
  tiny_checkpoints.write_gguf(path, config, weights)
  return str(path)


def config_for(tiny_gguf, tmp_path, **overrides):
  values = TINY_FLAGS | dict(model=tiny_gguf, output=str(tmp_path), name='run') | overrides
  return experiment.RunConfig(**values)


def round_metrics(run_dir):
  """Per-round records without wall-clock timings and timestamps (which differ run to run)."""
  rounds = history.rounds_of(json.loads((pathlib.Path(run_dir) / history.PROGRESS_FILE).read_text()))
  return [{k: v for k, v in r.items() if k not in ('timings', 'timestamp')} for r in rounds]


def run_driver(args, crash=None):
  command = [sys.executable]
  command += ([str(ROOT / 'tests' / 'crash_driver.py'), *crash, '--'] if crash else [str(DRIVER)])
  return subprocess.run(command + args, capture_output=True, text=True, cwd=ROOT, timeout=600)


def flag_list(config: experiment.RunConfig):
  def text(value):
    return ','.join(map(str, value)) if isinstance(value, (list, tuple)) else value

  return [f'--{k}={text(v)}' for k, v in config.as_dict().items() if v is not None]
