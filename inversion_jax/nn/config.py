"""Model configuration: one frozen dataclass for the whole Llama family.

Presets are classmethods returning `ModelConfig` with overrides, so SmolLM2, TinyLlama,
Llama 2/3 and Mistral-7B-v0.2 share one code path and differ only in numbers.
"""

import dataclasses

import jax.numpy as jnp


DTYPES = ('float32', 'bfloat16')  # Compute and parameter dtypes.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shape and numerics of a Llama-family decoder."""

  vocab_size: int
  num_layers: int
  embed_dim: int
  hidden_dim: int  # SwiGLU inner width.
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = False
  max_seq_len: int = 2048
  dtype: str = 'float32'  # Compute and parameter dtype: one of DTYPES.
  bos_token_id: int | None = 1
  eos_token_ids: tuple[int, ...] = (2,)

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f'num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}'
      )
    if self.dtype not in DTYPES:
      raise ValueError(f'dtype must be one of {", ".join(DTYPES)}, got {self.dtype!r}')

  @property
  def jnp_dtype(self):
    return jnp.dtype(self.dtype)

  def replace(self, **overrides) -> 'ModelConfig':
    return dataclasses.replace(self, **overrides)

  @classmethod
  def smollm2_135m(cls, **overrides) -> 'ModelConfig':
    values = dict(
        vocab_size=49152, num_layers=30, embed_dim=576, hidden_dim=1536, num_heads=9,
        num_kv_heads=3, head_dim=64, rope_theta=100_000.0, norm_eps=1e-5,
        tie_embeddings=True, max_seq_len=8192, bos_token_id=1, eos_token_ids=(2,),
    )
    return cls(**(values | overrides))

  @classmethod
  def tinyllama_1b(cls, **overrides) -> 'ModelConfig':
    values = dict(
        vocab_size=32000, num_layers=22, embed_dim=2048, hidden_dim=5632, num_heads=32,
        num_kv_heads=4, head_dim=64, rope_theta=10_000.0, norm_eps=1e-5, max_seq_len=2048,
    )
    return cls(**(values | overrides))

  @classmethod
  def llama2_7b(cls, **overrides) -> 'ModelConfig':
    values = dict(
        vocab_size=32000, num_layers=32, embed_dim=4096, hidden_dim=11008, num_heads=32,
        num_kv_heads=32, head_dim=128, rope_theta=10_000.0, norm_eps=1e-5, max_seq_len=4096,
    )
    return cls(**(values | overrides))

  @classmethod
  def llama3_8b(cls, **overrides) -> 'ModelConfig':
    values = dict(
        vocab_size=128256, num_layers=32, embed_dim=4096, hidden_dim=14336, num_heads=32,
        num_kv_heads=8, head_dim=128, rope_theta=500_000.0, norm_eps=1e-5, max_seq_len=8192,
        bos_token_id=128000, eos_token_ids=(128001, 128009),
    )
    return cls(**(values | overrides))

  @classmethod
  def mistral_7b_v02(cls, **overrides) -> 'ModelConfig':
    values = dict(
        vocab_size=32000, num_layers=32, embed_dim=4096, hidden_dim=14336, num_heads=32,
        num_kv_heads=8, head_dim=128, rope_theta=1_000_000.0, norm_eps=1e-5,
        max_seq_len=32768,
    )
    return cls(**(values | overrides))

  @classmethod
  def tiny(cls, **overrides) -> 'ModelConfig':
    """A small random-weight config for tests; prime-ish sizes catch shape mix-ups."""
    values = dict(
        vocab_size=263, num_layers=2, embed_dim=48, hidden_dim=88, num_heads=6,
        num_kv_heads=2, head_dim=8, rope_theta=10_000.0, norm_eps=1e-5, max_seq_len=512,
        bos_token_id=1, eos_token_ids=(2,),
    )
    return cls(**(values | overrides))
