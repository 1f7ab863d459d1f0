"""Samples completions of one prompt from a model, to see what the model writes.

  python experiments/generate.py                       # few-shot nmap prompt, 4 samples
  python experiments/generate.py --task='Find exploits for vsftpd 2.3.4' --tool=searchsploit
  python experiments/generate.py --prompt='The capital of France is' --temperature=0

Each completion goes to stdout on ONE line (a newline inside it is written as the two
characters `\\n`), so the output can be piped; logs and timings go to stderr.
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from inversion_jax.decode import generation, prompts  # noqa: E402
from inversion_jax.decode import sampling  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.nn import config as config_lib  # noqa: E402
from inversion_jax.nn import model as model_lib  # noqa: E402
from inversion_jax.nn import quantize as quantize_lib  # noqa: E402
from inversion_jax.nn.loading import registry  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('model', registry.DEFAULT_MODEL,
                    'Registry name, .gguf file, HF checkpoint dir or hub id.')
flags.DEFINE_string('prompt', None, 'Text to continue. Default: the few-shot command prompt '
                    'for --tool and --task (what the self-improvement loop sends).')
flags.DEFINE_string('tool', 'nmap', 'Tool of the default command prompt.')
flags.DEFINE_string('task', 'Do a service version scan on 10.0.0.5',
                    'Task of the default command prompt.')
flags.DEFINE_integer('max_new_tokens', 40, 'Tokens to sample per completion.')
flags.DEFINE_float('temperature', 0.7, 'Sampling temperature; 0 is greedy.')
flags.DEFINE_integer('seed', 0, 'PRNG seed of the sampler.')
flags.DEFINE_integer('batch', 4, 'Number of samples of the prompt (decoded as one batch).')
flags.DEFINE_enum('dtype', 'float32', list(config_lib.DTYPES), 'Parameter/compute dtype.')
flags.DEFINE_enum('quantize', 'none', list(quantize_lib.MODES),
                  'int8: weight-only int8 block projections (per-channel scales).')
flags.DEFINE_bool('stop_at_newline', None, 'End each completion at its first newline. '
                  'Default: on for the command prompt, off for --prompt.')


def check_flags() -> None:
  """Turns out-of-range numbers into one-line user errors before anything loads."""
  if FLAGS.batch < 1:
    raise UserError(f'--batch must be at least 1, got {FLAGS.batch}')
  if FLAGS.max_new_tokens < 1:
    raise UserError(f'--max_new_tokens must be at least 1, got {FLAGS.max_new_tokens}')
  if not (math.isfinite(FLAGS.temperature) and FLAGS.temperature >= 0):
    raise UserError(f'--temperature must be a finite number >= 0 (0 is greedy), got '
                    f'{FLAGS.temperature}')
  if not 0 <= FLAGS.seed < 2**31:
    raise UserError(f'--seed must be in [0, 2^31), got {FLAGS.seed}')
  if FLAGS.prompt is not None and not FLAGS.prompt:
    raise UserError('--prompt is empty; give the model some text to continue')


def chosen_prompt() -> tuple[tuple[str, str], bool]:
  """((prefix, suffix), stop_at_newline): the shared few-shot head is the cached prefix."""
  if FLAGS.prompt is not None:
    pair, stop = ('', FLAGS.prompt), False
  else:
    prompt = prompts.get_style('fewshot').generation(FLAGS.tool, FLAGS.task)
    pair, stop = (prompt.prefix, prompt.suffix), True
  return pair, stop if FLAGS.stop_at_newline is None else FLAGS.stop_at_newline


# Every character `str.splitlines` breaks at, written as an escape instead.
_LINE_BREAKS = str.maketrans({
    '\n': '\\n', '\r': '\\r', '\v': '\\v', '\f': '\\f', '\x1c': '\\x1c',
    '\x1d': '\\x1d', '\x1e': '\\x1e', '\x85': '\\x85', '\u2028': '\\u2028',
    '\u2029': '\\u2029'})


def one_line(text: str) -> str:
  """A completion on one stdout line: a newline becomes the two characters backslash-n."""
  return text.translate(_LINE_BREAKS)


def load_generator(stop_at_newline: bool) -> generation.Generator:
  """Loads the model in the requested dtype and wraps it for text in, text out."""
  start = time.perf_counter()
  config, flat, tokenizer = registry.load_model_source(FLAGS.model)
  graphdef, state = model_lib.from_flat_params(config.replace(dtype=FLAGS.dtype), flat)
  logging.info('loaded %s (%d layers, d=%d, %s) in %.1f s', FLAGS.model, config.num_layers,
               config.embed_dim, FLAGS.dtype, time.perf_counter() - start)
  return generation.Generator(graphdef, state, tokenizer,
                              stop_strings=('\n',) if stop_at_newline else (),
                              max_batch=FLAGS.batch, batch_multiple=1, show_progress=False,
                              quantize=FLAGS.quantize)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  check_flags()
  pair, stop_at_newline = chosen_prompt()
  generator = load_generator(stop_at_newline)
  config = sampling.SamplingConfig(temperature=FLAGS.temperature,
                                   max_new_tokens=FLAGS.max_new_tokens)
  start = time.perf_counter()
  completions = generator.generate([pair] * FLAGS.batch, config, seed=FLAGS.seed)
  seconds = time.perf_counter() - start
  logging.info('%d completions, %d tokens in %.2f s (compile included)', FLAGS.batch,
               sum(completions.num_tokens), seconds)
  for text in completions.texts:
    print(one_line(text))


if __name__ == '__main__':
  app.run(main)
