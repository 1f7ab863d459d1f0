"""Row compaction and length grouping against the one-call decode loop, in turns, same rows.

  python experiments/benchmark_compaction.py --tasks=50 --candidates=3 --output_json=F

Samples a round's prompts of one call (`--call=generate`: the loop's few-shot command
prompts, temperature 0.7, 100 new tokens, the commands of a round at the original's 50 x 3;
`--call=rate`: its rating prompts, temperature 0.1, 5 tokens, with the task as its own
reconstruction), then times `Generator.generate` with `compact_every=0` (one device call
per batch of rows in order: a batch decodes until its longest row stops), with
`compact_every=K` (finished rows leave the batch) and with compaction plus rows grouped by
prompt length (`parallel.group_by_length`, less left padding to prefill), alternating so
this machine's drift lands on all. Checks that all give the same texts. The first call of
each is a warm-up (compilation) and is reported apart.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import provenance  # noqa: E402
from inversion_jax import compile_cache  # noqa: E402
from inversion_jax.decode import generation, prompts  # noqa: E402
from inversion_jax.decode.sampling import SamplingConfig  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.nn import model  # noqa: E402
from inversion_jax.nn.loading import registry  # noqa: E402
from inversion_jax.tasks import bank  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('model', 'smollm2-135m-instruct', 'Model.')
flags.DEFINE_integer('tasks', 50, 'Tasks.')
flags.DEFINE_integer('candidates', 3, 'Commands per task.')
flags.DEFINE_integer('max_new_tokens', 100, 'Budget per command.')
flags.DEFINE_float('temperature', 0.7, 'Sampling temperature.')
flags.DEFINE_integer('compact_every', 8, 'Decode steps between compactions.')
flags.DEFINE_integer('repeats', 2, 'Timed calls of each, after one warm-up each.')
flags.DEFINE_integer('max_batch', 64, 'Rows per sampler call.')
flags.DEFINE_string('output_json', None, 'Where to write the figures.')
flags.DEFINE_enum('call', 'generate', ['generate', 'rate'], 'Which call of a round to time.')


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  compile_cache.enable()
  config, flat, tokenizer = registry.load_model_source(FLAGS.model)
  graphdef, state = model.from_flat_params(config, flat)
  style = prompts.get_style('fewshot')
  tasks = bank.sample_tasks(bank.default_bank(), FLAGS.tasks, seed=0)
  if FLAGS.call == 'generate':
    rows = [style.generation(t.tool, t.text) for t in tasks for _ in range(FLAGS.candidates)]
    sampling = SamplingConfig(FLAGS.temperature, FLAGS.max_new_tokens)
  else:  # The rating call: its real budget and temperature.
    rows = [style.rating(t.text, t.text) for t in tasks for _ in range(FLAGS.candidates)]
    sampling = SamplingConfig(0.1, 5)
  make = lambda every, group: generation.Generator(
      graphdef, state, tokenizer, max_batch=FLAGS.max_batch, compact_every=every,
      show_progress=False, group_rows=group)
  peers = {'one_call': make(0, False), 'compacting': make(FLAGS.compact_every, False),
           'compacting_grouped': make(FLAGS.compact_every, True)}
  times = {name: [] for name in peers}
  texts, tokens = {}, {}
  for repeat in range(FLAGS.repeats + 1):
    for name, generator in peers.items():
      start = time.perf_counter()
      out = generator.generate(rows, sampling, seed=1)
      times[name].append(time.perf_counter() - start)
      texts[name], tokens[name] = out.texts, sum(out.num_tokens)
  same = texts['one_call'] == texts['compacting'] == texts['compacting_grouped']
  steady = {name: float(np.median(t[1:])) for name, t in times.items()}
  result = {
      'rows': len(rows), 'generated_tokens': tokens['compacting'], 'same_texts': same,
      'first_call_seconds': {n: t[0] for n, t in times.items()},
      'steady_seconds': steady, 'all_seconds': times,
      'speedup': steady['one_call'] / steady['compacting'],
      'grouping_speedup': steady['compacting'] / steady['compacting_grouped'],
      'flags': {k: FLAGS[k].value for k in ('model', 'tasks', 'candidates', 'max_new_tokens',
                                             'temperature', 'compact_every', 'repeats',
                                             'max_batch', 'call')},
      'machine': provenance.machine_info(),
      'date': time.strftime('%Y-%m-%d'),
  }
  print(f'{len(rows)} rows, {tokens["compacting"]:,} tokens; same texts: {same}')
  print('| decode loop | first call (s) | steady (s, median) |\n|---|---|---|')
  for name in peers:
    print(f'| {name} | {times[name][0]:.1f} | {steady[name]:.1f} |')
  print(f'compaction speed-up (steady): {result["speedup"]:.2f}x; grouping by length on '
        f'top: {result["grouping_speedup"]:.2f}x')
  if FLAGS.output_json:
    with open(FLAGS.output_json, 'w') as sink:
      json.dump(result, sink, indent=2)
  if not same:
    raise UserError('compaction or grouping changed the sampled texts: a bug, report it')


if __name__ == '__main__':
  app.run(main)
