"""LoRA adapters on the attention projections, split from the frozen base for training.

Adapters are `nnx.LoRAParam` variables under each targeted `Linear`'s `lora` attribute;
`nnx.split(model, nnx.LoRAParam, ...)` separates them, so the train step differentiates
a small pytree and the base weights stay untouched. A run adds adapters once, before
round 1 (b = 0, so the model is unchanged), and every round then uses one graphdef:
one compilation for the whole run.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from inversion_jax.nn import model as model_lib

TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj')


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """The original's defaults: r=16, alpha=32, dropout 0.05 on q, k, v, o."""

  rank: int = 16
  alpha: float = 32.0
  dropout: float = 0.05
  targets: tuple[str, ...] = TARGETS
  init: str = 'he'  # How `a` starts: 'he' or 'peft' (model.LORA_INITS).

  def __post_init__(self):
    if self.rank < 1:
      raise ValueError(f'LoRA rank must be >= 1, got {self.rank}')
    if not 0 <= self.dropout < 1:
      raise ValueError(f'LoRA dropout must be in [0, 1), got {self.dropout}')
    unknown = set(self.targets) - set(TARGETS)
    if unknown:
      raise ValueError(f'unknown LoRA targets {sorted(unknown)}; choose from {TARGETS}')
    if self.init not in model_lib.LORA_INITS:
      raise ValueError(f'unknown LoRA init {self.init!r}; choose from '
                       f'{", ".join(model_lib.LORA_INITS)}')


def add_lora(graphdef, state, config: LoRAConfig, seed: int = 0):
  """Returns (graphdef, state) of the same model with adapters on `config.targets`."""
  model = nnx.merge(graphdef, state)
  rngs = nnx.Rngs(seed)
  dtype = jnp.float32  # Master copies: a bfloat16 model trains them in bfloat16 compute.
  for block in model.layers:
    for name in config.targets:
      linear = getattr(block.attn, name)
      in_dim, out_dim = linear.kernel.shape[-2:]  # A pmap-placed base leads with devices.
      linear.lora = model_lib.LoRA(in_dim, out_dim, config.rank, config.alpha, config.dropout,
                                   rngs=rngs, dtype=dtype, init=config.init)
  return nnx.split(model)


def split_lora(graphdef, state):
  """(graphdef, lora_params, base_params): the trainable and the frozen part."""
  return nnx.split(nnx.merge(graphdef, state), nnx.LoRAParam, ...)


def merge_into_base(lora_params, base_params, config: LoRAConfig, plain_state):
  """The adapter-free model's state with every adapter folded in: W + a @ b * alpha / r.

  Generation runs the plain model on these weights: the same function as base + LoRA
  without eight extra small matmuls per layer in every decode step. `plain_state` is
  the state of the model before `add_lora` (its structure and dtypes are reused).
  """
  merged = nnx.to_pure_dict(base_params)
  scale = config.alpha / config.rank
  for index, layer in nnx.to_pure_dict(lora_params)['layers'].items():
    for name, projection in layer['attn'].items():
      target = merged['layers'][index]['attn'][name]
      update = projection['lora']['a'] @ projection['lora']['b'] * scale
      target['kernel'] = target['kernel'] + update.astype(target['kernel'].dtype)
      target.pop('lora', None)
  state = jax.tree.map(lambda x: x, plain_state)  # A fresh State to fill.
  nnx.replace_by_pure_dict(state, merged)
  return state


def num_params(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))
