"""What one round costs with the original's pipeline, on this machine and model.

The original called transformers `generate` once per row and per step, batch 1: a command
(up to 100 new tokens; it kept the first line, but generate only stops at EOS), a
reconstruction (50) and a rating (5). This times those three calls on real prompts of the
original (zero-shot) style with SmolLM2 in transformers, forcing the fixed lengths, and
scales to a round of `--tasks x --candidates` rows, BEFORE and AFTER:

  python experiments/original_cost.py --tasks=8 --candidates=2 --samples=3
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import benchmark_sampler  # noqa: E402
from experiments import provenance  # noqa: E402
from inversion_jax.decode import prompts  # noqa: E402
from inversion_jax.errors import exit_on_user_error  # noqa: E402
from inversion_jax.nn.loading import registry  # noqa: E402
from inversion_jax.tasks import bank  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('model', registry.DEFAULT_MODEL, 'Model to time.')
flags.DEFINE_integer('tasks', 8, 'Tasks per phase of the round being costed.')
flags.DEFINE_integer('candidates', 2, 'Candidates per task.')
flags.DEFINE_integer('samples', 3, 'Rows actually timed; the mean is scaled up.')
flags.DEFINE_string('output_json', '', 'Optional path for the figures.')

LENGTHS = {'generate': 100, 'invert': 50, 'rate': 5}  # The original's max_new_tokens.


def time_call(hf, tokenizer, text: str, new_tokens: int) -> float:
  ids = torch.tensor([tokenizer.encode(text)])
  start = time.perf_counter()
  with torch.no_grad():
    hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=True, temperature=0.7, pad_token_id=0)
  return time.perf_counter() - start


@exit_on_user_error
def main(argv):
  del argv
  config, flat, tokenizer = registry.load_model_source(FLAGS.model)
  hf = benchmark_sampler.hf_model(config, flat)
  style = prompts.get_style('original')
  tasks = bank.sample_tasks(bank.default_bank(), FLAGS.samples, seed=0)
  command = 'nmap -sV -p 22,80,443 10.0.0.5'
  texts = {'generate': [style.generation(t.tool, t.text).text for t in tasks],
           'invert': [style.reconstruction(t.tool, command).text for t in tasks],
           'rate': [style.rating(t.text, t.text).text for t in tasks]}
  time_call(hf, tokenizer, texts['rate'][0], 2)  # Warm-up.
  per_row = {step: float(np.mean([time_call(hf, tokenizer, text, LENGTHS[step])
                                  for text in texts[step]])) for step in LENGTHS}
  rows = 2 * FLAGS.tasks * FLAGS.candidates  # BEFORE and AFTER.
  figures = {'seconds_per_row': per_row, 'rows_per_round': rows,
             'round_seconds': {s: v * rows for s, v in per_row.items()},
             'machine': provenance.machine_info()}
  figures['round_seconds']['total_without_training'] = sum(v * rows for v in per_row.values())
  print(json.dumps(figures['round_seconds'], indent=1))
  if FLAGS.output_json:
    with open(FLAGS.output_json, 'w') as f:
      json.dump(figures, f, indent=1)


if __name__ == '__main__':
  app.run(main)
