"""One round of the loop, stage by stage, against the original's way and this machine's floor.

One run on one machine and one set of weights measures:

  1. OURS: a full round of the library's loop (`experiment.build` + `rounds.run_round`):
     BEFORE (generate, invert, rate, validate), train, AFTER, held-out evaluation, at each
     `--configs` size, `--repeats` times. The first repeat includes compilation ("first
     round"; with the persistent compile cache warm from an earlier run it only loads the
     programs, which the compile counts show; in-memory caches are cleared between
     configs); the later ones are steady state (median). Generated
     token counts come from the round's record.
  2. THE ORIGINAL'S WAY (reference): transformers + PyTorch on the very same weights, batch
     1, one `generate` call per row and per step -- a command (max_new_tokens 100,
     temperature 0.7), a reconstruction of the cleaned command (50, 0.3), a rating (5,
     0.1) -- with the original's zero-shot prompts, `do_sample=True`, top_k=50
     (transformers' default), chained row by row. Two variants, timed in turns on
     `--reference_rows` rows of the task bank and scaled to each config's rows:
       * "eos":    generate stops at EOS, as the original's generate did; the first line is
                   kept afterwards (what the original really cost);
       * "forced": min_new_tokens = max_new_tokens, every call runs its full budget (what
                   `experiments/original_cost.py` timed: an upper bound).
     The reference covers generate + invert + rate only: the original had no held-out
     evaluation, and training costs about the same in both.
  3. THE FLOOR: the round's work at this machine's best rates for our sampler: its decode
     tokens at the full-batch (`--floor_batch`) decode throughput of
     `sampling.jit_generate` (t(N+1) - t(1)), its prompt tokens (every row's suffix plus
     each call's shared prefix once) at the prefill throughput of one `jit_forward` over
     `--floor_batch` x `--floor_prefill_len` tokens, and its training's matmul FLOPs
     (`step_flops`: forward + backward over each trained example's own tokens, no padding)
     at the throughput of one jitted f32 matmul of the model's MLP shape, measured in the
     same run. Per stage: train, held-out (its decode + prompt tokens) and signals (the
     prompt tokens they embed or score) each against their own floor.
  4. THE ORIGINAL'S TRAINING (reference): transformers + PEFT LoRA on the very examples the
     round trained on, every row padded to 512 tokens, batch 4, AdamW, clipping at 1.0
     (HF Trainer's), `--reference_train_steps` steps timed after a warm-up and scaled to
     the round's steps. With the EOS reference of 2. it makes the original's whole pipeline.

  The 'dose' config is the original's dose: 50 x 3 with a threshold calibrated so that
  ~60 % (`--dose_acceptance`) of round 1's BEFORE candidates pass (>= 90 examples
  trained), and every held-out task of the test split.

  python experiments/benchmark_round.py --output_json=benchmarks/round_cpu.json
  python experiments/benchmark_round.py --configs=demo --reference_rows=3 --skip_reference
  python experiments/benchmark_round.py --configs=dose --repeats=1 --reference_rows=2

Generated commands are text: nothing here executes them.
"""

import dataclasses
import json
import math
import os
import pathlib
import resource
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import benchmark_sampler  # noqa: E402
from experiments import provenance  # noqa: E402
from inversion_jax import compile_cache  # noqa: E402
from inversion_jax.decode import prompts as prompts_lib  # noqa: E402
from inversion_jax.decode import sampling  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.loop import experiment  # noqa: E402
from inversion_jax.loop import rounds  # noqa: E402
from inversion_jax.nn.loading import registry  # noqa: E402
from inversion_jax.scoring import text as text_lib  # noqa: E402
from inversion_jax.tasks import bank as bank_lib  # noqa: E402
from inversion_jax.train import training  # noqa: E402

FLAGS = flags.FLAGS

# README's demo and the original's size (DESIGN.md §1). eval_tasks of 'original' is a flag.
CONFIGS = {
    'demo': dict(tasks=8, candidates=2, max_new_tokens=48, threshold=0.3, eval_split='small',
                 eval_tasks=18),
    'original': dict(tasks=50, candidates=3, max_new_tokens=100, threshold=0.5,
                     eval_split='test', eval_tasks=36),
    # The original's dose: 50 x 3, a threshold calibrated to ~60 % acceptance on round 1's
    # BEFORE scores (>= 90 examples trained), every held-out task of the test split.
    'dose': dict(tasks=50, candidates=3, max_new_tokens=100, threshold=0.5, eval_split='test',
                 eval_tasks=0),
}
STAGES = ('generate', 'invert', 'rate', 'validate', 'train', 'heldout')
SCORING_STAGES = ('generate', 'invert', 'rate')


def define_flags() -> None:
  """Flags are defined only when run as a script, so tests can import this module."""
  flags.DEFINE_string('model', registry.DEFAULT_MODEL, 'Registry name, .gguf file or HF dir.')
  flags.DEFINE_list('configs', ['demo', 'original'], f'Round sizes, of {sorted(CONFIGS)}.')
  flags.DEFINE_integer('repeats', 2, 'Rounds per config: the first includes compilation.')
  flags.DEFINE_integer('eval_tasks_original', 36, "Held-out tasks of the 'original' config.")
  flags.DEFINE_string('prompt_style', prompts_lib.DEFAULT_STYLE,
                      'Prompt style of OUR round (the reference always uses the original\'s).')
  flags.DEFINE_integer('reference_rows', 6, 'Rows the reference pipeline times (each variant).')
  flags.DEFINE_bool('skip_reference', False, 'Do not time the transformers reference.')
  flags.DEFINE_integer('floor_batch', 64, 'Batch of the decode and prefill throughput runs.')
  flags.DEFINE_integer('floor_prefill_len', 128, 'Tokens per row of the prefill run.')
  flags.DEFINE_integer('floor_steps', 16, 'N of the decode throughput run, t(N+1) - t(1).')
  flags.DEFINE_integer('floor_repeats', 3, 'Timed calls per floor measurement (median).')
  flags.DEFINE_string('compile_cache', '', "Persistent compile cache directory; '' = the "
                      "library's default, 'off' = none (the first round then compiles all).")
  flags.DEFINE_integer('seed', 0, 'Seed of the rounds and of the reference rows.')
  flags.DEFINE_float('dose_acceptance', 0.6, "Share of round 1's BEFORE candidates the 'dose' "
                     'threshold keeps (its quantile of their scores).')
  flags.DEFINE_float('dose_threshold', None, "The 'dose' threshold as given (no calibration).")
  flags.DEFINE_integer('reference_train_steps', 3, "Steps of the original's training timed "
                       '(after one warm-up), scaled to the round; 0 = not timed.')
  flags.DEFINE_string('output_json', 'benchmark_round.json', 'Where to write the results.')


# ----------------------------------------------------------------------------- compile counts


class CompileCounter:
  """Counts JAX compilations through `jax.monitoring` (registered once per process).

  `backend_compiles` counts every XLA compile request (a persistent-cache load included),
  `cache_hits` the ones served by the persistent cache; their difference is the programs
  XLA really compiled. `snapshot()` / `delta()` give counts for a stretch of code.
  """

  _installed = False
  counts = {'backend_compiles': 0, 'cache_hits': 0, 'traces': 0}
  seconds = {'backend_compile': 0.0}

  @classmethod
  def install(cls) -> None:
    if cls._installed:
      return
    from jax import monitoring  # pylint: disable=g-import-not-at-top

    def on_duration(event, duration, **kwargs):
      del kwargs
      if event == '/jax/core/compile/backend_compile_duration':
        cls.counts['backend_compiles'] += 1
        cls.seconds['backend_compile'] += duration
      elif event == '/jax/core/compile/jaxpr_trace_duration':
        cls.counts['traces'] += 1

    def on_event(event, **kwargs):
      del kwargs
      if event == '/jax/compilation_cache/cache_hits':
        cls.counts['cache_hits'] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)
    cls._installed = True

  @classmethod
  def snapshot(cls) -> dict:
    return dict(cls.counts) | dict(cls.seconds)

  @classmethod
  def delta(cls, before: dict) -> dict:
    now = cls.snapshot()
    out = {k: now[k] - before[k] for k in now}
    out['xla_compiles'] = out['backend_compiles'] - out['cache_hits']
    out['backend_compile'] = round(out['backend_compile'], 3)
    return out


# ----------------------------------------------------------------------------- our round


def run_config(name: str, overrides: dict | None = None, model: str = registry.DEFAULT_MODEL,
               seed: int = 0,
               prompt_style: str = prompts_lib.DEFAULT_STYLE) -> experiment.RunConfig:
  """The RunConfig of a named size (`CONFIGS`), with `overrides` on top."""
  if name not in CONFIGS:
    raise UserError(f'unknown config {name!r}; choose from {", ".join(sorted(CONFIGS))}')
  values = dict(model=model, seed=seed, prompt_style=prompt_style, cycles=1, eval_every=1)
  return experiment.RunConfig(**(values | CONFIGS[name] | (overrides or {})))


def time_rounds(config: experiment.RunConfig, model_source, repeats: int) -> tuple[dict, object]:
  """Builds the experiment once and runs round 1 `repeats` times from the initial adapters.

  Returns (this config's results, the experiment).

  Every repeat does the same work (same seeds, same adapters), so the later ones measure
  steady state; the first one includes compilation.
  """
  CompileCounter.install()
  exp = experiment.build(config, model_source=model_source)
  runs, result = [], None
  for index in range(repeats):
    before = CompileCounter.snapshot()
    kl_base_computed = exp.kl_probe is None
    cpu = cpu_seconds()
    result = rounds.run_round(exp, exp.initial_lora, 1)
    record = result.record
    metrics = record['metrics']
    runs.append({
        'repeat': index + 1,
        'timings': {k: float(v) for k, v in record['timings'].items()},
        # CPU time of every thread of this process: on a machine that other jobs load, the
        # wall time an uncontended core would take (pinned to one core: `taskset -c 1`).
        'cpu_seconds': cpu_seconds() - cpu,
        'tokens': {'before': int(metrics.get('before/tokens_generated', 0)),
                   'after': int(metrics.get('after/tokens_generated', 0)),
                   'heldout': int(metrics.get('heldout/tokens', 0))},
        'compiles': CompileCounter.delta(before),
        'metrics': {k: metrics[k] for k in (
            'before/mean_score', 'before/acceptance_rate', 'after/mean_score',
            'train/num_examples', 'heldout/quality') if k in metrics},
    })
    logging.info('%d x %d round, repeat %d: %s', config.tasks, config.candidates, index + 1,
                 runs[-1]['timings'])
  work = round_work(exp, result, kl_base_computed)
  exp.benchmark_examples = train_examples(exp, result)  # For the original's training.
  return {'config': config.as_dict(), 'rows_per_round': 2 * config.tasks * config.candidates,
          'runs': runs, 'first': runs[0], 'steady': steady(runs), 'work': work}, exp


def cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def steady(runs: list[dict]) -> dict:
  """Median timings of the repeats after the first (the first alone when there is one)."""
  later = runs[1:] or runs[:1]
  keys = sorted({k for r in later for k in r['timings']})
  return {'timings': {k: statistics.median(r['timings'].get(k, 0.0) for r in later)
                      for k in keys},
          'repeats': [r['repeat'] for r in later]}


def round_work(exp, result: rounds.RoundResult, kl_base_computed: bool = False) -> dict:
  """Tokens the round had to decode, prefill and train on (what the floor is made of).

  Prefill counts each row's prompt suffix and each call's shared prefix once (the sampler
  prefills a prefix once per call); decode counts the generated tokens the record reports
  (stop tokens excluded, so it is a floor too). `kl_base_computed`: the round computed KL's
  base side (`rounds.kl_probe`, once a process), so its probe counts twice.
  """
  count = exp.count_tokens
  style = exp.style
  prefill = decode = train = signal_prefill = 0
  by_name = {p.name: p for p in result.phases}
  for name in ('before', 'after'):
    phase = by_name.get(name)
    if phase is None:
      continue
    decode += int(phase.metrics.get('tokens_generated', 0))
    rows = phase.rows
    prompts = ([style.generation(r['tool'], r['task']) for r in rows] +
               [style.reconstruction(r['tool'], r['command']) for r in rows])
    if exp.scorer.judge == 'sample':
      prompts += [style.rating(r['task'], r['reconstruction']) for r in rows]
    prefill += sum(count(p.suffix) for p in prompts) + sum(count(h) for h in {
        p.prefix for p in prompts})
    if name == 'before':
      for r in rows:
        if r['kept']:
          prompt, completion = style.training_text(r['tool'], r['task'], r['command'])
          train += count(prompt) + count(completion) + 1  # + EOS
    if 'agreement_rate' in phase.metrics:  # The commands embedded for the early warning.
      signal_prefill += sum(count(r['command'] or ' ') + 1 for r in rows)
  if exp.kl_probe is not None:  # kl_from_base: its fixed probe with the round's weights, and
    prompts = exp.kl_probe[0]    # with the base model's where this round computed that side.
    signal_prefill += (1 + kl_base_computed) * (sum(count(p.suffix) for p in prompts) +
                                                sum(count(h) for h in {p.prefix for p in prompts}))
  held = next((p for p in result.phases if p.name == 'heldout'), None)
  held_decode = held_prefill = 0
  if held is not None:
    held_decode = int(held.metrics.get('tokens', 0))
    prompts = [style.generation(r['tool'], r['task']) for r in held.rows]
    held_prefill = sum(count(p.suffix) for p in prompts) + sum(count(h) for h in {
        p.prefix for p in prompts})
  return {'decode_tokens': decode + held_decode, 'prefill_tokens': prefill + held_prefill,
          'train_tokens': train * exp.config.train.epochs,
          'heldout_decode_tokens': held_decode, 'heldout_prefill_tokens': held_prefill,
          'signal_prefill_tokens': signal_prefill,
          'train_lengths': training.example_lengths(train_examples(exp, result)),
          'train_flops': train_flops(exp, result)}


def train_examples(exp, result: rounds.RoundResult) -> list:
  """The examples the round trained on: BEFORE's kept rows, as `rounds.fine_tune` makes them."""
  before = next((p for p in result.phases if p.name == 'before'), None)
  rows = [r for r in (before.rows if before else []) if r['kept']]
  return [training.make_example(exp.tokenizer, *exp.style.training_text(
      r['tool'], r['task'], r['command']), add_bos=exp.generator.add_bos) for r in rows]


def step_flops(model_config, lora_rank: int, lengths) -> float:
  """Matmul FLOPs of a train step's forward + backward over examples of `lengths` tokens,
  each attending only to itself (no padding, no packing waste): the training floor's work.

  Forward: 2 x multiply-adds of every projection, the MLP, the LM head, the LoRA factors
  and attention (q.k and p.v over the example's own tokens). Backward: the frozen weights
  need only the input gradients (1x the forward), the adapters and attention input and
  weight-side gradients (2x).
  """
  c = model_config
  d, q, kv, f = c.embed_dim, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_dim
  frozen = c.num_layers * 2 * (d * q + 2 * d * kv + q * d + 3 * d * f) + 2 * d * c.vocab_size
  lora = c.num_layers * 2 * lora_rank * ((d + q) + 2 * (d + kv) + (q + d))
  total = 0.0
  for n in lengths:
    attention = c.num_layers * 2 * 2 * q * n * n  # q.k and p.v, every query, every key.
    total += n * (2 * frozen + 3 * lora) + 3 * attention
  return total


def train_flops(exp, result: rounds.RoundResult) -> float:
  lengths = training.example_lengths(train_examples(exp, result))
  return exp.config.train.epochs * step_flops(exp.generator.config, exp.config.lora.lora_rank,
                                              lengths)


def measure_matmul(rows: int = 512, inner: int = 576, cols: int = 1536, repeats: int = 5,
                   dtype=jnp.float32) -> dict:
  """FLOP/s of one jitted [rows, inner] x [inner, cols] product (the model's MLP shape)."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((rows, inner)), dtype)
  b = jnp.asarray(rng.standard_normal((inner, cols)), dtype)
  dot = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(dot(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(dot(a, b))
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  return {'shape': [rows, inner, cols], 'seconds': seconds,
          'flop_s': 2 * rows * inner * cols / seconds}


def calibrate_threshold(config: experiment.RunConfig, model_source, acceptance: float) -> dict:
  """The threshold keeping `acceptance` of round 1's BEFORE candidates: scores them once
  (the round scores the same candidates again: same seeds, same adapters)."""
  if not 0 < acceptance <= 1:
    raise UserError(f'--dose_acceptance must be in (0, 1], got {acceptance}')
  start = time.perf_counter()
  exp = experiment.build(config, model_source=model_source)
  generator = exp.generator.with_state(exp.inference_state(exp.initial_lora))
  scores = np.sort(np.nan_to_num(rounds.score_round(exp, generator, 1, 'before').scores,
                                 nan=0.0))[::-1]
  keep = max(1, math.ceil(acceptance * len(scores)))
  threshold = float(np.clip(scores[keep - 1], 0.0, 1.0))
  return {'threshold': threshold, 'acceptance_target': acceptance,
          'accepted': int(np.sum(scores >= threshold)), 'candidates': int(len(scores)),
          'seconds': time.perf_counter() - start}


# ----------------------------------------------------------------------------- the floor


def measure_floor(graphdef, state, config, batch: int = 64, prefill_len: int = 128,
                  decode_steps: int = 16, decode_prompt_len: int = 32, repeats: int = 3,
                  seed: int = 0) -> dict:
  """Decode tok/s (full batch, t(N+1) - t(1)) and prefill tok/s (one cache-free forward)."""
  full, one = benchmark_sampler.ours_calls(graphdef, state, config, batch, decode_prompt_len,
                                           decode_steps, seed)
  tokens = jnp.asarray(benchmark_sampler.random_tokens(config, (batch, prefill_len), seed))
  positions = jnp.broadcast_to(jnp.arange(prefill_len)[None], (batch, prefill_len))
  key_start = jnp.zeros((batch,), jnp.int32)
  forward = lambda: jax.block_until_ready(sampling.jit_forward(
      graphdef, state, tokens, positions, key_start, last_only=True))
  forward()  # Compile.
  times = {'full': [], 'one': [], 'prefill': []}
  for _ in range(repeats):  # In turns, so the machine's drift hits all three alike.
    for key, call in (('full', full), ('one', one), ('prefill', forward)):
      start = time.perf_counter()
      call()
      times[key].append(time.perf_counter() - start)
  med = {k: statistics.median(v) for k, v in times.items()}
  rates = benchmark_sampler.decode_rates(batch, decode_steps, med['full'], med['one'])
  if rates['tok_s'] is None:  # Noise swamped the difference (tiny models): per-call rate.
    rates['tok_s'] = batch * (decode_steps + 1) / med['full']
    rates['note'] = 't(N+1) - t(1) <= 0: decode rate from t(N+1) alone'
  return {'batch': batch, 'decode_steps': decode_steps, 'decode_prompt_len': decode_prompt_len,
          'decode_tok_s': rates['tok_s'], 'decode_ms_per_step': rates['ms_per_step'],
          'decode_seconds': {'n_plus_1': med['full'], 'one': med['one']},
          'prefill_len': prefill_len, 'prefill_seconds': med['prefill'],
          'prefill_tok_s': batch * prefill_len / med['prefill'], **(
              {'note': rates['note']} if 'note' in rates else {})}


def floor_seconds(work: dict, floor: dict) -> dict:
  """Each stage's work at the measured rates: decode and prompt tokens at the decode and
  prefill throughputs, training's FLOPs (`step_flops`) at the matmul throughput."""
  decode = work['decode_tokens'] / floor['decode_tok_s']
  prefill = work['prefill_tokens'] / floor['prefill_tok_s']
  if floor.get('matmul_flop_s') and 'train_flops' in work:
    train = work['train_flops'] / floor['matmul_flop_s']
  else:
    train = 3 * work['train_tokens'] / floor['prefill_tok_s']
  heldout = (work.get('heldout_decode_tokens', 0) / floor['decode_tok_s'] +
             work.get('heldout_prefill_tokens', 0) / floor['prefill_tok_s'])
  signals = work.get('signal_prefill_tokens', 0) / floor['prefill_tok_s']
  return {'decode': decode, 'prefill': prefill, 'train': train, 'heldout': heldout,
          'signals': signals, 'scoring': decode + prefill - heldout,
          'generation': decode + prefill, 'total': decode + prefill + train + signals}


# ----------------------------------------------------------------------------- the reference

# The original's generate settings per step: (max_new_tokens, temperature).
REFERENCE_STEPS = {'generate': (100, 0.7), 'invert': (50, 0.3), 'rate': (5, 0.1)}
TOP_K = 50  # transformers' default when sampling; passed explicitly.


def completion_ids(output_ids, prompt_len: int, eos_ids) -> tuple[list[int], int]:
  """(new tokens up to the first EOS, number of new tokens the call produced)."""
  new = [int(t) for t in output_ids[prompt_len:]]
  eos = set(int(e) for e in eos_ids)
  cut = next((i for i, t in enumerate(new) if t in eos), len(new))
  return new[:cut], len(new)


def reference_generate(hf, tokenizer, text: str, max_new: int, temperature: float,
                       forced: bool, add_bos: bool, eos_ids) -> tuple[str, int, float]:
  """One batch-1 `generate` call as the original made it: (text, new tokens, seconds)."""
  import torch  # pylint: disable=g-import-not-at-top
  ids = torch.tensor([tokenizer.encode(text, add_bos=add_bos)])
  kwargs = dict(min_new_tokens=max_new) if forced else {}
  start = time.perf_counter()
  with torch.inference_mode():
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new,
                      do_sample=True, temperature=temperature, top_k=TOP_K,
                      eos_token_id=list(eos_ids), pad_token_id=tokenizer.pad_id, **kwargs)
  seconds = time.perf_counter() - start
  kept, produced = completion_ids(out[0].tolist(), ids.shape[1], eos_ids)
  return tokenizer.decode(kept), produced, seconds


def reference_row(hf, tokenizer, style, task, forced: bool, add_bos: bool, eos_ids,
                  steps: dict = REFERENCE_STEPS) -> dict:
  """generate -> first line -> invert -> first line -> rate, one call each, for one task."""
  out = {'seconds': {}, 'tokens': {}}

  def call(step, text):
    max_new, temperature = steps[step]
    completion, produced, seconds = reference_generate(hf, tokenizer, text, max_new,
                                                       temperature, forced, add_bos, eos_ids)
    out['seconds'][step], out['tokens'][step] = seconds, produced
    return completion

  raw = call('generate', style.generation(task.tool, task.text).text)
  out['raw_command'], out['command'] = raw, text_lib.clean_command(raw)
  raw = call('invert', style.reconstruction(task.tool, out['command']).text)
  out['raw_reconstruction'], out['reconstruction'] = raw, text_lib.clean_reconstruction(raw)
  out['rating'] = call('rate', style.rating(task.text, out['reconstruction']).text)
  out['score'] = float(text_lib.intrinsic_scores([task.text], [out['reconstruction']],
                                                 [out['rating']])[0])
  return out


def time_reference(hf, tokenizer, eos_ids, rows: int, seed: int = 0,
                   steps: dict = REFERENCE_STEPS) -> dict:
  """Both variants on `rows` bank tasks, in turns row by row; per-row means per step."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  style = prompts_lib.get_style('original')
  add_bos = tokenizer.bos_id is not None  # As our Generator does.
  tasks = bank_lib.sample_tasks(bank_lib.default_bank(), rows, seed=seed)
  reference_generate(hf, tokenizer, style.rating('a', 'b').text, 2, 0.1, True, add_bos,
                     eos_ids)  # Warm-up.
  variants = {'eos': [], 'forced': []}
  for task in tasks:
    for name in variants:
      variants[name].append(reference_row(hf, tokenizer, style, task, name == 'forced', add_bos,
                                          eos_ids, steps) | {'task': task.text,
                                                             'tool': task.tool})
  out = {'rows_timed': rows, 'steps': {k: dict(max_new_tokens=v[0], temperature=v[1], top_k=TOP_K)
                                       for k, v in steps.items()},
         'torch_threads': torch.get_num_threads()}
  for name, timed in variants.items():
    out[name] = {
        'seconds_per_row': {s: float(np.mean([r['seconds'][s] for r in timed])) for s in steps},
        'tokens_per_row': {s: float(np.mean([r['tokens'][s] for r in timed])) for s in steps},
        'rows': timed,
    }
    out[name]['seconds_per_row']['total'] = sum(out[name]['seconds_per_row'][s] for s in steps)
  return out


def time_reference_training(hf, tokenizer, examples, run_config, steps: int,
                            max_len: int = 512, seed: int = 0) -> dict:
  """The original's training of `examples`, timed: transformers + PEFT LoRA (its rank,
  alpha, dropout and targets), every row padded to `max_len` tokens, batch
  `run_config.train.batch_size`, AdamW (lr `run_config.train.lr`) with HF Trainer's
  gradient clipping at 1.0, loss on every token (the original trained on padding too). One
  warm-up step, then `steps` steps timed; their mean is scaled to one epoch of `examples`."""
  import peft  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  lora = run_config.lora
  model = peft.get_peft_model(hf, peft.LoraConfig(
      r=lora.lora_rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.lora_dropout,
      target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'],
      task_type='CAUSAL_LM'))
  model.train()
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                lr=run_config.train.lr, weight_decay=0.0)
  batch = run_config.train.batch_size
  total_steps = math.ceil(len(examples) / batch) * run_config.train.epochs
  pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0

  def rows(start):
    chosen = [examples[(start + i) % len(examples)] for i in range(batch)]
    ids = torch.full((batch, max_len), pad, dtype=torch.long)
    mask = torch.zeros((batch, max_len), dtype=torch.long)
    for i, e in enumerate(chosen):
      sequence = list(e.prompt + e.completion)[:max_len]
      ids[i, :len(sequence)] = torch.tensor(sequence)
      mask[i, :len(sequence)] = 1
    return ids, mask

  def step(start):
    ids, mask = rows(start)
    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())

  step(0)  # Warm-up.
  times, cpu = [], cpu_seconds()
  for index in range(steps):
    start = time.perf_counter()
    step((index + 1) * batch)
    times.append(time.perf_counter() - start)
  per_step = float(np.mean(times))
  cpu_per_step = (cpu_seconds() - cpu) / max(steps, 1)
  model.unload()  # Leaves `hf` without adapters.
  return {'steps_timed': steps, 'seconds_per_step': per_step, 'step_seconds': times,
          'steps_per_round': total_steps, 'seconds_scaled': per_step * total_steps,
          'cpu_seconds_per_step': cpu_per_step, 'cpu_seconds_scaled': cpu_per_step * total_steps,
          'max_len': max_len, 'batch_size': batch, 'examples': len(examples),
          'torch_threads': torch.get_num_threads(),
          'what': "transformers + PEFT, rows padded to max_len, batch 4, AdamW, clip 1.0: "
                  "timed on steps_timed steps, scaled to steps_per_round"}


def scale_reference(reference: dict, rows: int) -> dict:
  """Per-row means times the round's rows (BEFORE + AFTER), per variant and step."""
  return {name: {step: seconds * rows for step, seconds in
                 reference[name]['seconds_per_row'].items()} for name in ('eos', 'forced')}


def ratios(entry: dict, floor: dict) -> dict:
  """reference / ours (generate + invert + rate) and ours / floor, first and steady."""
  out = {}
  for which in ('first', 'steady'):
    timings = entry[which]['timings']
    scoring = sum(timings.get(s, 0.0) for s in SCORING_STAGES)
    generation = scoring + timings.get('heldout', 0.0)
    out[which] = {'ours_scoring_seconds': scoring}
    for variant, scaled in (entry.get('reference_scaled') or {}).items():
      out[which][f'reference_{variant}_over_ours'] = scaled['total'] / scoring if scoring else None
    if floor:
      fs = entry['floor_seconds']
      out[which]['ours_over_floor'] = timings['total'] / fs['total'] if fs['total'] else None
      out[which]['generation_over_floor'] = (generation / fs['generation']
                                             if fs['generation'] else None)
      for stage in ('train', 'heldout', 'signals'):
        out[which][f'{stage}_over_floor'] = (timings.get(stage, 0.0) / fs[stage]
                                             if fs.get(stage) else None)
    reference_train = entry.get('reference_train')
    if reference_train and timings.get('train'):
      out[which]['reference_train_over_ours'] = (reference_train['seconds_scaled'] /
                                                 timings['train'])
      scaled = (entry.get('reference_scaled') or {}).get('eos')
      if scaled:  # The original's whole pipeline (EOS-stopping generation + its training).
        out[which]['reference_pipeline_over_ours_round'] = (
            (scaled['total'] + reference_train['seconds_scaled']) / timings['total'])
  return out


# ----------------------------------------------------------------------------- reporting


def _fmt(value, spec='.1f'):
  return '-' if value is None or (isinstance(value, float) and not math.isfinite(value)) else (
      format(value, spec))


def format_table(results: dict) -> str:
  machine = results['machine']
  lines = [f"benchmark_round: {results['model']} on "
           f"{machine.get('cpu_model') or machine.get('processor') or '?'}"
           f" ({results['machine']['cpu_count']} CPUs), jax {results['machine']['jax']}, "
           f"torch {results['machine'].get('torch', '-')}, {results['machine']['date']}"]
  floor = results.get('floor')
  if floor:
    lines.append(f"floor rates at batch {floor['batch']}: decode {floor['decode_tok_s']:.0f} "
                 f"tok/s, prefill {floor['prefill_tok_s']:.0f} tok/s")
  reference = results.get('reference')
  if reference:
    lines.append("reference = the original's way (transformers, batch 1, one generate per row "
                 "and step, zero-shot prompts, lengths " + '/'.join(
                     str(v['max_new_tokens']) for v in reference['steps'].values()) +
                 "): 'eos' stops at EOS as the original did, 'forced' runs every call to "
                 "max_new_tokens (what original_cost.py timed)")
    for variant in ('eos', 'forced'):
      per_row, toks = reference[variant]['seconds_per_row'], reference[variant]['tokens_per_row']
      lines.append(f"reference {variant:6s} per row: " + ', '.join(
          f"{s} {per_row[s]:.2f} s / {toks[s]:.0f} tok" for s in REFERENCE_STEPS) +
          f" ({reference['rows_timed']} rows timed)")
  for name, entry in results['configs'].items():
    cfg = entry['config']
    lines += ['', f"## {name}: {cfg['tasks']} tasks x {cfg['candidates']} candidates = "
              f"{entry['rows_per_round']} rows (BEFORE + AFTER), max_new_tokens "
              f"{cfg['max_new_tokens']}, held-out {cfg['eval_split']}/{cfg['eval_tasks']}, "
              f"prompts {cfg['prompt_style']}", '']
    scaled = entry.get('reference_scaled') or {}
    header = ['stage', 'ours first (s)', 'ours steady (s)', 'ref eos (s, scaled)',
              'ref forced (s, scaled)']
    lines += ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    first, steady_t = entry['first']['timings'], entry['steady']['timings']
    for stage in (*STAGES, 'total'):
      ref = [_fmt(scaled.get(v, {}).get(stage if stage != 'total' else 'total'))
             if stage in (*SCORING_STAGES, 'total') else '' for v in ('eos', 'forced')]
      lines.append(f"| {stage} | {_fmt(first.get(stage))} | {_fmt(steady_t.get(stage))} | "
                   f"{ref[0]} | {ref[1]} |")
    lines.append('round CPU seconds (all threads; = wall time on an uncontended core when '
                 'pinned to one): ' + ', '.join(f"repeat {run['repeat']} {run['cpu_seconds']:.0f}"
                                                for run in entry['runs']))
    tokens = entry['first']['tokens']
    compiles = entry['first']['compiles']
    lines.append(f"tokens generated: before {tokens['before']}, after {tokens['after']}, held-out "
                 f"{tokens['heldout']}; first round compiles: {compiles['xla_compiles']} XLA + "
                 f"{compiles['cache_hits']} from the persistent cache "
                 f"({compiles['backend_compile']:.1f} s); " + (
                     f"last round: {entry['runs'][-1]['compiles']['backend_compiles']}"
                     if len(entry['runs']) > 1 else 'steady = first (one repeat)'))
    r = entry['ratios']
    for which in ('first', 'steady'):
      parts = [f"{v} {_fmt(r[which].get(f'reference_{v}_over_ours'), '.2f')}x"
               for v in ('eos', 'forced') if f'reference_{v}_over_ours' in r[which]]
      text = f"{which}: reference / ours (generate+invert+rate) " + (
          ', '.join(parts) if parts else 'not timed')
      if 'ours_over_floor' in r[which]:
        text += (f"; ours / floor: round {_fmt(r[which]['ours_over_floor'], '.2f')}x, "
                 f"generation {_fmt(r[which]['generation_over_floor'], '.2f')}x")
      lines.append(text)
    if 'floor_seconds' in entry:
      fs = entry['floor_seconds']
      lines.append(f"floor: {fs['total']:.1f} s (decode {fs['decode']:.1f}, prefill "
                   f"{fs['prefill']:.1f}, train {fs['train']:.1f}, of which held-out "
                   f"{fs['heldout']:.1f}; signals {fs['signals']:.1f}) for "
                   f"{entry['work']['decode_tokens']} decode, {entry['work']['prefill_tokens']} "
                   f"prompt and {entry['work']['train_tokens']} training tokens")
    calibration = entry.get('calibration')
    if calibration:
      lines.append(f"threshold {calibration['threshold']:.4f} " + (
          'as given' if calibration.get('given') else
          f"(keeps {calibration['accepted']}/{calibration['candidates']} of round 1's BEFORE "
          f"candidates, target {calibration['acceptance_target']:.0%}; scoring them took "
          f"{calibration['seconds']:.0f} s, not in the round)"))
    train = entry['first']['timings']
    lines.append(f"train: {entry['first']['metrics'].get('train/num_examples', 0):.0f} examples, "
                 f"first {_fmt(train.get('train'))} s (steps meeting a new shape "
                 f"{_fmt(train.get('train_new_shapes'))} s), steady "
                 f"{_fmt(steady_t.get('train'))} s")
    reference_train = entry.get('reference_train')
    if reference_train:
      lines.append(f"reference training (the original's way: transformers + PEFT, padded to "
                   f"{reference_train['max_len']}, batch {reference_train['batch_size']}): "
                   f"{reference_train['seconds_per_step']:.2f} s/step timed on "
                   f"{reference_train['steps_timed']} steps, x {reference_train['steps_per_round']}"
                   f" steps = {reference_train['seconds_scaled']:.0f} s (scaled)")
    for which in ('first', 'steady'):
      parts = [f"{label} {_fmt(r[which].get(key), '.2f')}x" for label, key in (
          ('train/floor', 'train_over_floor'), ('held-out/floor', 'heldout_over_floor'),
          ('signals/floor', 'signals_over_floor'),
          ('ref training/ours', 'reference_train_over_ours'),
          ('ref pipeline (eos + training)/our round', 'reference_pipeline_over_ours_round'))
               if r[which].get(key) is not None]
      if parts:
        lines.append(f"{which}: " + ', '.join(parts))
  return '\n'.join(lines)


@dataclasses.dataclass
class Settings:
  model: str = registry.DEFAULT_MODEL
  configs: tuple = ('demo', 'original')
  repeats: int = 2
  eval_tasks_original: int = 36
  prompt_style: str = prompts_lib.DEFAULT_STYLE
  reference_rows: int = 6
  skip_reference: bool = False
  floor_batch: int = 64
  floor_prefill_len: int = 128
  floor_steps: int = 16
  floor_repeats: int = 3
  seed: int = 0
  dose_acceptance: float = 0.6
  dose_threshold: float | None = None
  reference_train_steps: int = 3
  reference_train_len: int = 512
  overrides: dict = dataclasses.field(default_factory=dict)  # Per config name (tests).
  reference_steps: dict = dataclasses.field(default_factory=lambda: dict(REFERENCE_STEPS))


def run_benchmark(settings: Settings, model_source=None, save=None) -> dict:
  """Everything in one dict (JSON-ready): machine, floor, reference, per-config rounds.

  `save(results)`, when given, is called after every stage with what is measured so far
  (`complete` False until the end), so a benchmark cut short keeps its finished stages.
  """
  save = save or (lambda results: None)
  if settings.repeats < 1:
    raise UserError(f'--repeats must be >= 1, got {settings.repeats}')
  for name in settings.configs:
    run_config(name)  # Unknown names fail before anything runs.
  model_config, flat, tokenizer = model_source or registry.load_model_source(settings.model)
  source = (model_config, flat, tokenizer)
  results = {'model': settings.model, 'machine': provenance.machine_info(),
             'settings': {k: v for k, v in dataclasses.asdict(settings).items()},
             'configs': {}}
  exp, examples = None, {}
  for name in settings.configs:
    overrides = dict(settings.overrides.get(name, {}))
    if name == 'original':
      overrides.setdefault('eval_tasks', settings.eval_tasks_original)
    config = run_config(name, overrides, settings.model, settings.seed, settings.prompt_style)
    calibration = None
    if name == 'dose' and 'threshold' not in overrides:
      if settings.dose_threshold is None:
        calibration = calibrate_threshold(config, source, settings.dose_acceptance)
      else:
        calibration = {'threshold': settings.dose_threshold, 'given': True}
      config = config.replace(threshold=calibration['threshold'])
    jax.clear_caches()  # Each config's first round compiles (or loads) as a fresh process would.
    results['configs'][name], exp = time_rounds(config, source, settings.repeats)
    if calibration:
      results['configs'][name]['calibration'] = calibration
    examples[name] = exp.benchmark_examples
    save(results | {'complete': False})
  graphdef, state = exp.generator.graphdef, exp.plain_state
  results['floor'] = measure_floor(graphdef, state, exp.generator.config, settings.floor_batch,
                                   settings.floor_prefill_len, settings.floor_steps,
                                   repeats=settings.floor_repeats, seed=settings.seed)
  matmul = measure_matmul(repeats=max(3, settings.floor_repeats))
  results['floor']['matmul'], results['floor']['matmul_flop_s'] = matmul, matmul['flop_s']
  save(results | {'complete': False})
  # The rounds' compiled programs (GBs) are not needed by the transformers reference.
  exp = graphdef = state = None  # Nor the JAX weights.
  compile_cache.release_compiled()
  if not settings.skip_reference:
    hf = benchmark_sampler.hf_model(model_config.replace(dtype='float32'), flat)
    results['reference'] = time_reference(hf, tokenizer, tokenizer.eos_ids,
                                          settings.reference_rows, settings.seed,
                                          settings.reference_steps)
    save(results | {'complete': False})
    if settings.reference_train_steps:
      for name, entry in results['configs'].items():
        if examples[name]:
          entry['reference_train'] = time_reference_training(
              hf, tokenizer, examples[name], run_config(name, settings.overrides.get(name)),
              settings.reference_train_steps, settings.reference_train_len, settings.seed)
    del hf
  for entry in results['configs'].values():
    entry['floor_seconds'] = floor_seconds(entry['work'], results['floor'])
    if 'reference' in results:
      entry['reference_scaled'] = scale_reference(results['reference'], entry['rows_per_round'])
    entry['ratios'] = ratios(entry, results['floor'])
  results['complete'] = True
  return results


def settings_from_flags() -> Settings:
  return Settings(model=FLAGS.model, configs=tuple(FLAGS.configs), repeats=FLAGS.repeats,
                  eval_tasks_original=FLAGS.eval_tasks_original, prompt_style=FLAGS.prompt_style,
                  reference_rows=FLAGS.reference_rows, skip_reference=FLAGS.skip_reference,
                  floor_batch=FLAGS.floor_batch, floor_prefill_len=FLAGS.floor_prefill_len,
                  floor_steps=FLAGS.floor_steps, floor_repeats=FLAGS.floor_repeats,
                  seed=FLAGS.seed, dose_acceptance=FLAGS.dose_acceptance,
                  dose_threshold=FLAGS.dose_threshold,
                  reference_train_steps=FLAGS.reference_train_steps)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  if FLAGS.compile_cache != 'off':
    compile_cache.enable(FLAGS.compile_cache or None)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_json)), exist_ok=True)
  cache = FLAGS.compile_cache or 'default'

  def save(results):  # Atomically: a kill mid-write keeps the previous stage's file.
    results['settings']['compile_cache'] = cache
    partial = f'{FLAGS.output_json}.partial'
    with open(partial, 'w', encoding='utf-8') as file:
      json.dump(results, file, indent=1)
    os.replace(partial, FLAGS.output_json)

  results = run_benchmark(settings_from_flags(), save=save)
  save(results)
  print(format_table(results))
  print(f'json: {FLAGS.output_json}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
