"""Decode throughput of our jitted sampler against transformers on the same weights.

One run measures, on this machine:
  * the matmul ceiling: best-of-N GFLOP/s of a jitted f32 2048x2048 matmul, and the tok/s it
    would allow if decode were matmul-bound (2 FLOPs per decode parameter per token);
  * our DECODE throughput (prefill excluded): `sampling.jit_generate` timed with N+1 and with
    1 new tokens, tok/s = batch * N / (t(N+1) - t(1)), every row running every step;
  * transformers' PyTorch `generate` on the very same weights, timed the same way, in
    turns with ours (call by call) so that the machine's drift hits both alike;
  * each framework's MATMUL FLOOR at each batch: one decode step's projections alone
    (q, k, v, o, gate, up, down per layer, then the LM head) with attention, norms and
    sampling left out, on that framework's own weights. Its share of the step says how much
    is left outside the matmul library, and HF's step over our floor is the best ours/HF
    ratio this machine's matmuls allow;
  * on accelerators, the memory bandwidth and the ms/step it allows for reading the weights;
  * shared-prefix prefill: one 200-token prefix prefilled once plus 64 short suffixes,
    against the 64 full prompts (prefix + suffix) in one batched forward pass.

  python experiments/benchmark_sampler.py --shape=smollm2-135m            # CPU, f32
  python experiments/benchmark_sampler.py --shape=mistral-7b --dtype=bfloat16   # GPU

Random weights of a real shape (`--shape`) time the same as real ones: every row is forced
to run every step (no stop tokens; `min_new_tokens` for transformers).
"""

import dataclasses
import functools
import json
import os
import statistics
import sys
import time

# transformers may share the GPU: JAX must not grab 75% of its memory up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from experiments import provenance  # noqa: E402
from inversion_jax.decode import sampling  # noqa: E402
from inversion_jax.errors import UserError, exit_on_user_error  # noqa: E402
from inversion_jax.nn import model as model_lib  # noqa: E402
from inversion_jax.nn import quantize  # noqa: E402
from inversion_jax.nn import config as config_lib  # noqa: E402
from inversion_jax.nn.config import ModelConfig  # noqa: E402
from inversion_jax.nn.loading import names, registry  # noqa: E402

SHAPES = {
    'smollm2-135m': ModelConfig.smollm2_135m,
    'mistral-7b': ModelConfig.mistral_7b_v02,
    'tinyllama': ModelConfig.tinyllama_1b,
}
DEFAULT_BATCHES = {'cpu': (64, 128), 'gpu': (1, 150)}

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Flags are defined only when run as a script, so tests can import this module."""
  flags.DEFINE_string('model', None, 'Registry name, .gguf file or HF dir: real weights.')
  flags.DEFINE_enum('shape', None, sorted(SHAPES), 'Random weights of this real shape '
                    '(default smollm2-135m when --model is not given).')
  flags.DEFINE_enum('dtype', 'float32', list(config_lib.DTYPES), 'Parameter/compute dtype.')
  flags.DEFINE_list('batches', None, 'Batch sizes. Default: 64,128 on CPU; 1,150 on GPU.')
  flags.DEFINE_integer('new_tokens', 32, 'N: decode steps timed (t(N+1) - t(1)).')
  flags.DEFINE_integer('prompt_len', 32, 'Prompt tokens per row (prefilled, not timed).')
  flags.DEFINE_integer('repeats', 3, 'Timed calls per measurement; the median is reported.')
  flags.DEFINE_integer('matmul_repeats', 10, 'Calls of the matmul; the best is reported.')
  flags.DEFINE_integer('matmul_size', 2048, 'n of the n x n @ n x n ceiling matmul.')
  flags.DEFINE_bool('skip_transformers', False, 'Do not time transformers.')
  flags.DEFINE_bool('skip_prefix', False, 'Do not time shared-prefix prefill.')
  flags.DEFINE_integer('prefix_len', 200, 'Shared prefix tokens of the prefill comparison.')
  flags.DEFINE_integer('suffix_len', 16, 'Per-row suffix tokens of the prefill comparison.')
  flags.DEFINE_integer('prefix_rows', 64, 'Rows of the prefill comparison.')
  flags.DEFINE_enum('device', 'auto', ['auto', 'cpu', 'cuda'],
                    'Torch device; auto: cuda when JAX runs on a GPU.')
  flags.DEFINE_integer('seed', 0, 'Seed of the random weights and tokens.')
  flags.DEFINE_enum('quantize', 'none', list(quantize.MODES),
                    'Our sampler on int8 weight-only block projections (the floors and '
                    'transformers stay in --dtype).')
  flags.DEFINE_string('output_json', 'benchmark_sampler.json', 'Where to write the results.')


# ----------------------------------------------------------------------------- model set-up


@functools.partial(jax.jit, static_argnames=('shape', 'dtype'))
def _normal(key, shape, dtype):
  return (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def random_flat_params(config: ModelConfig, seed: int = 0) -> dict[str, jax.Array]:
  """Random weights drawn on the device in the model dtype (cheap even for a 7B shape)."""
  key, flat = jax.random.key(seed), {}
  for index, (name, shape) in enumerate(sorted(names.expected_shapes(config).items())):
    if name.endswith('.scale'):
      flat[name] = jnp.ones(shape, config.jnp_dtype)
    else:
      flat[name] = _normal(jax.random.fold_in(key, index), shape, config.jnp_dtype)
  return flat


def load_weights(model: str | None, shape: str | None, dtype: str, seed: int = 0):
  """(config, flat params, source) from a registry name/path or a random real shape."""
  if model and shape:
    raise UserError('give --model (real weights) or --shape (random weights), not both')
  if model:
    config, flat, _ = registry.load_model_source(model)
    return config.replace(dtype=dtype), flat, model
  shape = shape or 'smollm2-135m'
  config = SHAPES[shape](dtype=dtype)
  return config, random_flat_params(config, seed), f'random {shape}'


def decode_params(config: ModelConfig) -> int:
  """Parameters a decode step multiplies: all but the embedding lookup, plus the LM head."""
  total = sum(int(np.prod(s)) for s in names.expected_shapes(config).values())
  head = config.vocab_size * config.embed_dim
  return total if config.tie_embeddings else total - head


def random_tokens(config: ModelConfig, shape, seed: int = 0) -> np.ndarray:
  """Token ids clear of the special ids at the bottom of the vocabulary."""
  low = min(3, config.vocab_size - 1)
  return np.random.default_rng(seed).integers(low, config.vocab_size, shape).astype(np.int32)


# ----------------------------------------------------------------------------- timing


def median_seconds(call, repeats: int) -> float:
  """Median wall time of `call()` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def best_seconds(call, repeats: int) -> float:
  """Fastest wall time of `call()` after one untimed call (compilation, warm-up)."""
  call()
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    best = min(best, time.perf_counter() - start)
  return best


def decode_rates(batch: int, new_tokens: int, t_full: float, t_one: float) -> dict:
  """tok/s and ms per step from t(N+1) and t(1); None when noise swamps the difference."""
  delta = t_full - t_one
  ok = delta > 0
  return dict(batch=batch, seconds_n_plus_1=t_full, seconds_1=t_one,
              tok_s=batch * new_tokens / delta if ok else None,
              ms_per_step=1e3 * delta / new_tokens if ok else None)


def matmul_ceiling(size: int = 2048, repeats: int = 10, dtype: str = 'float32') -> float:
  """Best-of-N GFLOP/s of a jitted size^3 matmul; on accelerators a chain of them per call."""
  inner = 1 if jax.default_backend() == 'cpu' else 64  # A lone GPU matmul is launch-bound.
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (size, size), jnp.float32).astype(dtype)
  b = (jax.random.normal(key_b, (size, size), jnp.float32) / np.sqrt(size)).astype(dtype)
  chain = jax.jit(lambda x, y: jax.lax.fori_loop(0, inner, lambda _, z: z @ y, x))
  return 2 * size**3 * inner / best_seconds(lambda: chain(a, b).block_until_ready(),
                                            repeats) / 1e9


def memory_bandwidth(megabytes: int = 1024, repeats: int = 10) -> float:
  """Best-of-N GB/s of a jitted elementwise pass (bytes read + written): the HBM roofline."""
  x = jnp.zeros((megabytes * 2**20 // 4,), jnp.float32)
  bump = jax.jit(lambda v: v + 1.0)
  return 2 * x.nbytes / best_seconds(lambda: bump(x).block_until_ready(), repeats) / 1e9


def interleaved_rates(calls: dict, batch: int, new_tokens: int, repeats: int,
                      floors: dict | None = None, floor_steps: int = 1) -> dict:
  """Decode rates of several samplers (and their matmul floors), timed in turns.

  `calls` maps a name to its warmed-up (t(N+1) call, t(1) call); `floors` optionally maps
  the same names to warmed-up calls of `floor_steps` + 1 and 1 projection-only steps. This
  machine's speed drifts by tens of percent within minutes, so timing one sampler for
  minutes and then the other would measure the drift; alternating call by call leaves it
  in the medians of all.
  """
  floors = floors or {}
  timed = {}
  for name, (full, one) in calls.items():
    timed[name, 'full'], timed[name, 'one'] = full, one
    if name in floors:
      timed[name, 'floor full'], timed[name, 'floor one'] = floors[name]
  times = {key: [] for key in timed}
  for _ in range(repeats):
    for key, call in timed.items():
      start = time.perf_counter()
      call()
      times[key].append(time.perf_counter() - start)
  medians = {key: statistics.median(values) for key, values in times.items()}
  rates = {}
  for name in calls:
    rates[name] = decode_rates(batch, new_tokens, medians[name, 'full'], medians[name, 'one'])
    if name in floors:
      floor = decode_rates(batch, floor_steps, medians[name, 'floor full'],
                           medians[name, 'floor one'])
      rates[name]['matmul_floor_ms'] = floor['ms_per_step']
  return rates


def ours_calls(graphdef, state, config: ModelConfig, batch: int, prompt_len: int,
               new_tokens: int, seed: int = 0):
  """Our sampler, compiled for N+1 and 1 new tokens: greedy, no stop tokens."""
  tokens = jnp.asarray(random_tokens(config, (batch, prompt_len), seed))
  key_start = jnp.zeros((batch,), jnp.int32)
  stop_mask = jnp.zeros((config.vocab_size,), bool)

  def call(new):
    settings = sampling.SamplingConfig(temperature=0.0, max_new_tokens=new)
    return lambda: jax.block_until_ready(sampling.jit_generate(
        graphdef, state, tokens, key_start, jax.random.key(seed), stop_mask,
        spec=sampling.DecodeSpec(settings, 0)))

  full, one = call(new_tokens + 1), call(1)
  full(), one()  # Compile both shapes.
  return full, one


# ----------------------------------------------------------------------------- matmul floor

PROJECTIONS = ('attn.q_proj', 'attn.k_proj', 'attn.v_proj', 'attn.o_proj', 'mlp.gate_proj',
               'mlp.up_proj', 'mlp.down_proj')
FLOOR_STEPS = 8  # Projection-only steps timed, as t(FLOOR_STEPS + 1) - t(1) like decode.


def projection_chain(x, layers, head):
  """One decode step's projections in model order, with only elementwise glue between them.

  Works on jax and torch arrays alike: `layers` holds each layer's seven projections as
  callables (q, k, v, o, gate, up, down), `head` maps [B, D] to logits. Every product
  feeds the next layer or a side sum, so no compiler can drop one.
  """
  side = 0
  for q, k, v, o, gate, up, down in layers:
    side = side + k(x)[:, :1] + v(x)[:, :1]
    h = x + o(q(x))
    x = h + down(gate(h) * up(h))
  return head(x), side


def _matmul(weight):
  return lambda x: x @ weight


def _ours_projections(kernels, head, x, tied):
  """Our model's own products: `x @ kernel`, and the head as `model.forward` computes it."""
  layers = [[_matmul(kernel) for kernel in layer] for layer in kernels]
  spec = 'BD,VD->BV' if tied else 'BD,DV->BV'
  return projection_chain(x, layers, lambda h: model_lib.einsum_f32(spec, h, head))


@functools.partial(jax.jit, static_argnames=('tied', 'steps'))
def _ours_projection_loop(kernels, head, x, tied, steps):
  """`steps` projection-only steps in one device loop, the way `generate` runs decode steps.

  Loop-invariant work (widening bf16 weights for the CPU's f32 head, say) is hoisted out
  of the loop here as it is there; each step's input depends on the last step's logits,
  so no step can be hoisted whole.
  """
  def step(_, x):
    logits, side = _ours_projections(kernels, head, x, tied)
    return x + (1e-6 * (side + logits.max(-1, keepdims=True))).astype(x.dtype)

  return jax.lax.fori_loop(0, steps, step, x)


def ours_projection_weights(flat, config: ModelConfig):
  """(per-layer kernels in `PROJECTIONS` order, LM head weight) from flat params."""
  kernels = [[jnp.asarray(flat[f'layers.{i}.{name}.kernel']) for name in PROJECTIONS]
             for i in range(config.num_layers)]
  return kernels, jnp.asarray(flat['embed.embedding' if config.tie_embeddings
                                   else 'lm_head.kernel'])


def ours_floor_calls(flat, config: ModelConfig, batch: int, steps: int = FLOOR_STEPS,
                     seed: int = 0):
  """Warmed-up calls running `steps` + 1 and 1 projection-only steps on our weights.

  Timed as a difference like the samplers, so once-per-call work cancels out (XLA:CPU
  widens bf16 weights to f32 once per call, outside the loop).
  """
  kernels, head = ours_projection_weights(flat, config)
  x = _normal(jax.random.key(seed), (batch, config.embed_dim), config.jnp_dtype) * 5

  def call(count):
    return lambda: jax.block_until_ready(
        _ours_projection_loop(kernels, head, x, config.tie_embeddings, count))

  full, one = call(steps + 1), call(1)
  full(), one()  # Compile both.
  return full, one


def hf_projections(hf) -> list:
  """transformers' own projection modules per layer, in `PROJECTIONS` order."""
  hf_parts = {'attn': 'self_attn', 'mlp': 'mlp'}
  paths = [(hf_parts[part], name) for part, name in (p.split('.') for p in PROJECTIONS)]
  return [[getattr(getattr(layer, part), name) for part, name in paths]
          for layer in hf.model.layers]


def hf_floor_calls(hf, config: ModelConfig, batch: int, steps: int = FLOOR_STEPS,
                   seed: int = 0):
  """The same for transformers: its own `nn.Linear` modules and LM head, eagerly."""
  import torch  # pylint: disable=g-import-not-at-top
  layers = hf_projections(hf)
  rows = np.random.default_rng(seed).standard_normal((batch, config.embed_dim)) * 0.1
  x = torch.from_numpy(rows.astype(np.float32)).to(device=hf.device, dtype=hf.dtype)

  def call(count):
    def run():
      with torch.inference_mode():
        for _ in range(count):
          projection_chain(x, layers, hf.lm_head)
      if hf.device.type == 'cuda':
        torch.cuda.synchronize()
    return run

  full, one = call(steps + 1), call(1)
  full(), one()  # Warm up.
  return full, one


# ----------------------------------------------------------------------------- transformers


def _to_torch(array):
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(array, names.LazyTensor):  # A loader's tensor: read it now.
    array = array[...]
  if isinstance(array, np.ndarray):
    if array.dtype.name == 'bfloat16':
      return torch.from_numpy(array.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))  # A writable copy: loader arrays are read-only.
  return torch.from_dlpack(array)  # A jax.Array: zero-copy, on its device.


def hf_config(config: ModelConfig):
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.embed_dim,
      intermediate_size=config.hidden_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, rope_theta=config.rope_theta, rms_norm_eps=config.norm_eps,
      tie_word_embeddings=config.tie_embeddings, max_position_embeddings=config.max_seq_len,
      bos_token_id=config.bos_token_id, eos_token_id=list(config.eos_token_ids),
      pad_token_id=0, hidden_act='silu')


def hf_model(config: ModelConfig, flat: dict, device: str = 'cpu'):
  """transformers' LlamaForCausalLM holding our weights (HF weight = our kernel.T)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  try:  # transformers 5; 4.x kept it in modeling_utils.
    from transformers.initialization import no_init_weights  # pylint: disable=g-import-not-at-top
  except ImportError:
    from transformers.modeling_utils import no_init_weights  # pylint: disable=g-import-not-at-top
  old_dtype = torch.get_default_dtype()
  torch.set_default_dtype(getattr(torch, config.dtype))
  try:
    with no_init_weights(), torch.device(device):
      hf = transformers.LlamaForCausalLM(hf_config(config))
  finally:
    torch.set_default_dtype(old_dtype)
  targets, filled = hf.state_dict(), set()
  with torch.no_grad():
    for ours, array in flat.items():
      entry, _ = names.lookup(ours, 'ours')
      tensor = _to_torch(array)
      hf_name = names.rename(ours, 'ours', 'hf')
      targets[hf_name].copy_(tensor.T if entry.transpose else tensor)
      filled.add(hf_name)
  if config.tie_embeddings:  # A bare constructor leaves the head untied (and empty).
    hf.lm_head.weight = hf.model.embed_tokens.weight
    filled.add('lm_head.weight')
  unfilled = set(targets) - filled
  if unfilled:
    raise ValueError(f'transformers parameters without a value: {sorted(unfilled)[:5]}')
  return hf.eval()


def hf_calls(hf, config: ModelConfig, batch: int, prompt_len: int, new_tokens: int,
             seed: int = 0):
  """transformers `generate` for N+1 and 1 new tokens: greedy, length forced."""
  import torch  # pylint: disable=g-import-not-at-top
  tokens = torch.from_numpy(random_tokens(config, (batch, prompt_len), seed)).long()
  tokens = tokens.to(hf.device)
  mask = torch.ones_like(tokens)

  def call(new):
    def run():
      with torch.inference_mode():
        out = hf.generate(input_ids=tokens, attention_mask=mask, max_new_tokens=new,
                          min_new_tokens=new, do_sample=False, pad_token_id=0)
      if hf.device.type == 'cuda':
        torch.cuda.synchronize()
      assert out.shape == (batch, prompt_len + new), out.shape
    return run

  full, one = call(new_tokens + 1), call(1)
  full(), one()  # Warm up (allocator, kernels).
  return full, one


def torch_device(requested: str) -> str:
  """The torch device to use: cuda only when asked (or auto on a GPU) and available."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  want = requested if requested != 'auto' else (
      'cuda' if jax.default_backend() == 'gpu' else 'cpu')
  if want == 'cuda' and not torch.cuda.is_available():
    logging.warning('torch has no CUDA here; timing transformers on the CPU')
    return 'cpu'
  return want


# ----------------------------------------------------------------------------- prefix prefill


def prefix_prefill(graphdef, state, config: ModelConfig, rows: int = 64, prefix_len: int = 200,
                   suffix_len: int = 16, repeats: int = 3, seed: int = 0) -> dict:
  """One shared prefix prefilled once + short suffixes, against full prompts per row."""
  prefix = jnp.asarray(random_tokens(config, (prefix_len,), seed))
  suffixes = jnp.asarray(random_tokens(config, (rows, suffix_len), seed + 1))
  full = jnp.concatenate([jnp.broadcast_to(prefix, (rows, prefix_len)), suffixes], axis=1)
  key_start = jnp.zeros((rows,), jnp.int32)
  suffix_pos = jnp.broadcast_to(prefix_len + jnp.arange(suffix_len), (rows, suffix_len))
  full_pos = jnp.broadcast_to(jnp.arange(prefix_len + suffix_len), full.shape)

  def shared():
    cache = sampling.jit_prefill_prefix(graphdef, state, prefix)
    return jax.block_until_ready(
        sampling.jit_forward(graphdef, state, suffixes, suffix_pos, key_start, cache))

  def unshared():
    return jax.block_until_ready(
        sampling.jit_forward(graphdef, state, full, full_pos, key_start))

  gap = float(jnp.max(jnp.abs(shared() - unshared())))  # Compiles both; same logits?
  t_shared, t_full = median_seconds(shared, repeats), median_seconds(unshared, repeats)
  return dict(rows=rows, prefix_len=prefix_len, suffix_len=suffix_len,
              shared_prefix_s=t_shared, full_prompts_s=t_full, speedup=t_full / t_shared,
              max_abs_logit_diff=gap)


# ----------------------------------------------------------------------------- one run


@dataclasses.dataclass(frozen=True)
class Settings:
  """What one benchmark run measures (the flags, minus where the weights come from)."""

  batches: tuple[int, ...]
  new_tokens: int = 32
  prompt_len: int = 32
  repeats: int = 3
  matmul_repeats: int = 10
  matmul_size: int = 2048
  skip_transformers: bool = False
  skip_prefix: bool = False
  prefix_len: int = 200
  suffix_len: int = 16
  prefix_rows: int = 64
  device: str = 'auto'
  seed: int = 0


def ceiling_section(config: ModelConfig, size: int, repeats: int) -> dict:
  """Matmul GFLOP/s (f32, plus the model dtype if different) and the tok/s they imply.

  On accelerators, also the memory roofline: a decode step must read every decode weight
  once, so ms/step >= weight bytes / measured bandwidth (batch 1 is bound by this).
  """
  params = decode_params(config)
  section = dict(decode_params=params, size=size)
  for dtype in dict.fromkeys(('float32', config.dtype)):
    gflops = matmul_ceiling(size, repeats, dtype)
    section[dtype] = dict(gflops=gflops, tok_s=gflops * 1e9 / (2 * params))
    logging.info('matmul %s: %.1f GFLOP/s', dtype, gflops)
  if jax.default_backend() != 'cpu':
    gb_s = memory_bandwidth(repeats=repeats)
    weight_bytes = params * jnp.dtype(config.jnp_dtype).itemsize
    section['memory'] = dict(gb_s=gb_s, weight_bytes=weight_bytes,
                             roofline_ms_per_step=1e3 * weight_bytes / (gb_s * 1e9))
    logging.info('memory: %.0f GB/s, roofline %.2f ms/step', gb_s,
                 section['memory']['roofline_ms_per_step'])
  return section


def decode_section(graphdef, state, config, flat, settings: Settings, ceiling: dict) -> list:
  """Ours and transformers (unless skipped) at each batch size, timed in turns, with ratios."""
  hf = None if settings.skip_transformers else hf_model(
      config, flat, torch_device(settings.device))
  rows = []
  for batch in settings.batches:
    args = (config, batch, settings.prompt_len, settings.new_tokens, settings.seed)
    calls = {'ours': ours_calls(graphdef, state, *args)}
    floors = {'ours': ours_floor_calls(flat, config, batch, seed=settings.seed)}
    if hf is not None:
      calls['transformers'] = hf_calls(hf, *args)
      floors['transformers'] = hf_floor_calls(hf, config, batch, seed=settings.seed)
    rates = interleaved_rates(calls, batch, settings.new_tokens, settings.repeats, floors,
                              FLOOR_STEPS)
    ours = rates['ours']
    row = dict(batch=batch, ours=ours, pct_of_f32_ceiling=_pct(
        ours['tok_s'], ceiling['float32']['tok_s']), pct_of_dtype_ceiling=_pct(
            ours['tok_s'], ceiling[config.dtype]['tok_s']))
    for rate in rates.values():
      rate['matmul_share_pct'] = _share(rate['matmul_floor_ms'], rate['ms_per_step'])
    if hf is not None:
      row['transformers'] = theirs = rates['transformers']
      theirs['device'] = str(hf.device)
      if ours['tok_s'] and theirs['tok_s']:
        row['ours_over_transformers'] = ours['tok_s'] / theirs['tok_s']
      if theirs['ms_per_step'] and ours['matmul_floor_ms']:
        # What ours/HF would be if everything but our projections cost nothing.
        row['max_ours_over_transformers'] = theirs['ms_per_step'] / ours['matmul_floor_ms']
    logging.info('batch %d: %s', batch, row)
    rows.append(row)
  return rows


def _pct(value, ceiling):
  return None if value is None else 100.0 * value / ceiling


def _share(part, whole):
  return None if not part or not whole else 100.0 * part / whole


def run_benchmark(graphdef, state, config: ModelConfig, flat, settings: Settings,
                  source: str = 'model') -> dict:
  """Every measurement of one run, as a JSON-ready dict (machine info included)."""
  longest = settings.prompt_len + settings.new_tokens + 1
  if longest > config.max_seq_len:
    raise UserError(f'--prompt_len + --new_tokens + 1 = {longest} exceeds the context of '
                    f'{config.max_seq_len} tokens')
  results = dict(source=source, machine=provenance.machine_info(),
                 settings=dataclasses.asdict(settings),
                 config=dataclasses.asdict(config))
  results['matmul_ceiling'] = ceiling = ceiling_section(config, settings.matmul_size,
                                                     settings.matmul_repeats)
  results['decode'] = decode_section(graphdef, state, config, flat, settings, ceiling)
  results['peak_device_bytes'] = peak_device_bytes()
  if not settings.skip_prefix:
    results['prefix_prefill'] = prefix_prefill(
        graphdef, state, config, settings.prefix_rows, settings.prefix_len,
        settings.suffix_len, settings.repeats, settings.seed)
  return results


def peak_device_bytes() -> int | None:
  """Peak bytes in use on the first device so far (None where the backend does not say)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def _num(value, spec):
  return '-' if value is None else format(value, spec)


def format_table(results: dict) -> str:
  """A compact human summary of `run_benchmark`'s dict."""
  ceiling, config = results['matmul_ceiling'], results['config']
  f32 = ceiling['float32']
  int8 = ', int8 projections' if results.get('quantize') == 'int8' else ''
  lines = [f"{results['source']} ({config['dtype']}{int8}) on {results['machine']['device_kind']}",
           f"matmul ceiling (f32 {ceiling['size']}^3): {f32['gflops']:.1f} GFLOP/s = "
           f"{f32['tok_s']:.0f} tok/s at {ceiling['decode_params'] / 1e6:.1f}M decode params"]
  memory = ceiling.get('memory')
  if memory:
    lines.append(f"memory bandwidth: {memory['gb_s']:.0f} GB/s; reading "
                 f"{memory['weight_bytes'] / 2**30:.2f} GiB of weights: "
                 f">= {memory['roofline_ms_per_step']:.2f} ms/step")
  if config['dtype'] != 'float32':
    own = ceiling[config['dtype']]
    lines.append(f"matmul ceiling ({config['dtype']}): {own['gflops']:.1f} GFLOP/s = "
                 f"{own['tok_s']:.0f} tok/s")
  lines.append(f"{'batch':>5} {'ours tok/s':>10} {'ms/step':>8} {'floor':>8} {'HF tok/s':>9} "
               f"{'ms/step':>8} {'floor':>8} {'ours/HF':>8} {'max':>6} {'%ceiling':>9}")
  for row in results['decode']:
    ours, hf = row['ours'], row.get('transformers', {})
    lines.append(f"{row['batch']:>5} {_num(ours['tok_s'], '10.1f')} "
                 f"{_num(ours['ms_per_step'], '8.2f')} {_num(ours.get('matmul_floor_ms'), '8.2f')} "
                 f"{_num(hf.get('tok_s'), '9.1f')} {_num(hf.get('ms_per_step'), '8.2f')} "
                 f"{_num(hf.get('matmul_floor_ms'), '8.2f')} "
                 f"{_num(row.get('ours_over_transformers'), '8.2f')} "
                 f"{_num(row.get('max_ours_over_transformers'), '6.2f')} "
                 f"{_num(row['pct_of_dtype_ceiling'], '8.1f')}%")
  lines.append('floor: ms of the step\'s projections alone (matmul library only); max: HF '
               'ms/step over our floor, the best ours/HF these matmuls allow')
  if results.get('peak_device_bytes'):
    lines.append(f"peak device memory: {results['peak_device_bytes'] / 2**30:.2f} GiB")
  prefill = results.get('prefix_prefill')
  if prefill:
    lines.append(f"prefill {prefill['rows']} rows x ({prefill['prefix_len']} shared + "
                 f"{prefill['suffix_len']}): shared prefix {prefill['shared_prefix_s']:.3f} s, "
                 f"full prompts {prefill['full_prompts_s']:.3f} s, "
                 f"{prefill['speedup']:.2f}x faster")
  return '\n'.join(lines)


def settings_from_flags() -> Settings:
  try:
    batches = tuple(int(b) for b in FLAGS.batches) if FLAGS.batches else None
  except ValueError:
    raise UserError(f'--batches takes integers, got {FLAGS.batches}') from None
  batches = batches or DEFAULT_BATCHES.get(jax.default_backend(), DEFAULT_BATCHES['gpu'])
  numbers = dict(batches=min(batches), new_tokens=FLAGS.new_tokens, prompt_len=FLAGS.prompt_len,
                 repeats=FLAGS.repeats, matmul_repeats=FLAGS.matmul_repeats,
                 matmul_size=FLAGS.matmul_size,
                 prefix_len=FLAGS.prefix_len, suffix_len=FLAGS.suffix_len,
                 prefix_rows=FLAGS.prefix_rows)
  for name, value in numbers.items():
    if value < 1:
      raise UserError(f'--{name} must be at least 1, got {value}')
  fields = {f.name for f in dataclasses.fields(Settings)} - {'batches'}
  return Settings(batches=batches, **{name: getattr(FLAGS, name) for name in fields})


@exit_on_user_error
def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments {argv[1:]}; all settings are --flags')
  settings = settings_from_flags()
  config, flat, source = load_weights(FLAGS.model, FLAGS.shape, FLAGS.dtype, FLAGS.seed)
  graphdef, state = quantize.apply(FLAGS.quantize, *model_lib.from_flat_params(config, flat))
  results = run_benchmark(graphdef, state, config, flat, settings, source)
  results['quantize'] = FLAGS.quantize
  with open(FLAGS.output_json, 'w', encoding='utf-8') as file:
    json.dump(results, file, indent=2)
  print(format_table(results))
  print(f'json: {FLAGS.output_json}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
