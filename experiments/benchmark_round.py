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
     `--floor_batch` x `--floor_prefill_len` tokens, and its training tokens at a third of
     that (forward + backward ~ 3 forwards). Reported as round seconds / floor seconds.

  python experiments/benchmark_round.py --output_json=benchmarks/round_cpu.json
  python experiments/benchmark_round.py --configs=demo --reference_rows=3 --skip_reference

Generated commands are text: nothing here executes them.
"""

import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import benchmark_sampler  # noqa: E402
from inversion_jax import compile_cache  # noqa: E402
from inversion_jax import experiment  # noqa: E402
from inversion_jax import prompts as prompts_lib  # noqa: E402
from inversion_jax import rounds  # noqa: E402
from inversion_jax import sampling  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.loading import registry  # noqa: E402
from inversion_jax.scoring import text as text_lib  # noqa: E402
from inversion_jax.tasks import bank as bank_lib  # noqa: E402

FLAGS = flags.FLAGS

# README's demo and the original's size (DESIGN.md §1). eval_tasks of 'original' is a flag.
CONFIGS = {
    'demo': dict(tasks=8, candidates=2, max_new_tokens=48, threshold=0.3, eval_split='small',
                 eval_tasks=18),
    'original': dict(tasks=50, candidates=3, max_new_tokens=100, threshold=0.5,
                     eval_split='test', eval_tasks=36),
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
    result = rounds.run_round(exp, exp.initial_lora, 1)
    record = result.record
    metrics = record['metrics']
    runs.append({
        'repeat': index + 1,
        'timings': {k: float(v) for k, v in record['timings'].items()},
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
  work = round_work(exp, result)
  return {'config': config.as_dict(), 'rows_per_round': 2 * config.tasks * config.candidates,
          'runs': runs, 'first': runs[0], 'steady': steady(runs), 'work': work}, exp


def steady(runs: list[dict]) -> dict:
  """Median timings of the repeats after the first (the first alone when there is one)."""
  later = runs[1:] or runs[:1]
  keys = sorted({k for r in later for k in r['timings']})
  return {'timings': {k: statistics.median(r['timings'].get(k, 0.0) for r in later)
                      for k in keys},
          'repeats': [r['repeat'] for r in later]}


def round_work(exp, result: rounds.RoundResult) -> dict:
  """Tokens the round had to decode, prefill and train on (what the floor is made of).

  Prefill counts each row's prompt suffix and each call's shared prefix once (the sampler
  prefills a prefix once per call); decode counts the generated tokens the record reports
  (stop tokens excluded, so it is a floor too).
  """
  count = exp.count_tokens
  style = exp.style
  prefill = decode = train = 0
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
  held = next((p for p in result.phases if p.name == 'heldout'), None)
  if held is not None:
    decode += int(held.metrics.get('tokens', 0))
    prompts = [style.generation(r['tool'], r['task']) for r in held.rows]
    prefill += sum(count(p.suffix) for p in prompts) + sum(count(h) for h in {
        p.prefix for p in prompts})
  return {'decode_tokens': decode, 'prefill_tokens': prefill,
          'train_tokens': train * exp.config.epochs}


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
  decode = work['decode_tokens'] / floor['decode_tok_s']
  prefill = work['prefill_tokens'] / floor['prefill_tok_s']
  train = 3 * work['train_tokens'] / floor['prefill_tok_s']
  return {'decode': decode, 'prefill': prefill, 'train': train,
          'generation': decode + prefill, 'total': decode + prefill + train}


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
  return out


# ----------------------------------------------------------------------------- reporting


def git_commit() -> str | None:
  try:
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def cpu_model() -> str | None:
  """The CPU's model name from /proc/cpuinfo (Linux; `platform.processor()` is often '')."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as file:
      for line in file:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return None


def machine_info() -> dict:
  info = benchmark_sampler.machine_info()
  info.update(processor=platform.processor(), cpu_model=cpu_model(), machine=platform.machine(),
              git_commit=git_commit(),
              date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'))
  return info


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
                   f"{fs['prefill']:.1f}, train {fs['train']:.1f}) for "
                   f"{entry['work']['decode_tokens']} decode, {entry['work']['prefill_tokens']} "
                   f"prompt and {entry['work']['train_tokens']} training tokens")
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
  overrides: dict = dataclasses.field(default_factory=dict)  # Per config name (tests).
  reference_steps: dict = dataclasses.field(default_factory=lambda: dict(REFERENCE_STEPS))


def run_benchmark(settings: Settings, model_source=None) -> dict:
  """Everything in one dict (JSON-ready): machine, floor, reference, per-config rounds."""
  if settings.repeats < 1:
    raise UserError(f'--repeats must be >= 1, got {settings.repeats}')
  for name in settings.configs:
    run_config(name)  # Unknown names fail before anything runs.
  model_config, flat, tokenizer = model_source or registry.load_model_source(settings.model)
  source = (model_config, flat, tokenizer)
  results = {'model': settings.model, 'machine': machine_info(),
             'settings': {k: v for k, v in dataclasses.asdict(settings).items()},
             'configs': {}}
  exp = None
  for name in settings.configs:
    overrides = dict(settings.overrides.get(name, {}))
    if name == 'original':
      overrides.setdefault('eval_tasks', settings.eval_tasks_original)
    config = run_config(name, overrides, settings.model, settings.seed, settings.prompt_style)
    jax.clear_caches()  # Each config's first round compiles (or loads) as a fresh process would.
    results['configs'][name], exp = time_rounds(config, source, settings.repeats)
  graphdef, state = exp.generator.graphdef, exp.plain_state
  results['floor'] = measure_floor(graphdef, state, exp.generator.config, settings.floor_batch,
                                   settings.floor_prefill_len, settings.floor_steps,
                                   repeats=settings.floor_repeats, seed=settings.seed)
  if not settings.skip_reference:
    hf = benchmark_sampler.hf_model(model_config.replace(dtype='float32'), flat)
    results['reference'] = time_reference(hf, tokenizer, tokenizer.eos_ids,
                                          settings.reference_rows, settings.seed,
                                          settings.reference_steps)
    del hf
  for entry in results['configs'].values():
    entry['floor_seconds'] = floor_seconds(entry['work'], results['floor'])
    if 'reference' in results:
      entry['reference_scaled'] = scale_reference(results['reference'], entry['rows_per_round'])
    entry['ratios'] = ratios(entry, results['floor'])
  return results


def settings_from_flags() -> Settings:
  return Settings(model=FLAGS.model, configs=tuple(FLAGS.configs), repeats=FLAGS.repeats,
                  eval_tasks_original=FLAGS.eval_tasks_original, prompt_style=FLAGS.prompt_style,
                  reference_rows=FLAGS.reference_rows, skip_reference=FLAGS.skip_reference,
                  floor_batch=FLAGS.floor_batch, floor_prefill_len=FLAGS.floor_prefill_len,
                  floor_steps=FLAGS.floor_steps, floor_repeats=FLAGS.floor_repeats,
                  seed=FLAGS.seed)


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  if FLAGS.compile_cache != 'off':
    compile_cache.enable(FLAGS.compile_cache or None)
  results = run_benchmark(settings_from_flags())
  results['settings']['compile_cache'] = FLAGS.compile_cache or 'default'
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_json)), exist_ok=True)
  with open(FLAGS.output_json, 'w', encoding='utf-8') as file:
    json.dump(results, file, indent=1)
  print(format_table(results))
  print(f'json: {FLAGS.output_json}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
