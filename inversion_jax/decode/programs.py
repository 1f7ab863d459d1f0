"""The pure functions a generator's backend compiles: (graphdef, placed state, arrays) in,
arrays out, static settings in one `DecodeSpec`. Per-row keys travel as raw key data
(uint32), which every backend can place and split."""

import jax

from inversion_jax.decode import sampling as sampling_lib
from inversion_jax.nn import model as model_lib


def generate(graphdef, state, tokens, key_start, key_data, stop_mask, content_mask, prefix, *,
             spec: sampling_lib.DecodeSpec):
  """Prefill and decode in one call (pmap, or no compaction)."""
  return sampling_lib.generate(graphdef, state, tokens, key_start,
                               jax.random.wrap_key_data(key_data), stop_mask, content_mask,
                               prefix=prefix, spec=spec)


def prefill(graphdef, state, tokens, key_start, key_data, stop_mask, content_mask, prefix, *,
            spec: sampling_lib.DecodeSpec):
  """A wave's first prefill part into a fresh carry of `spec.batch` rows."""
  return sampling_lib.prefill(graphdef, state, tokens, key_start,
                              jax.random.wrap_key_data(key_data), stop_mask, content_mask,
                              prefix=prefix, spec=spec)


def prefill_into(graphdef, state, carry, row, tokens, key_start, key_data, stop_mask,
                 content_mask, prefix, *, spec: sampling_lib.DecodeSpec):
  """A later prefill part written into the wave's carry at `row`, in place."""
  return sampling_lib.prefill(graphdef, state, tokens, key_start,
                              jax.random.wrap_key_data(key_data), stop_mask, content_mask,
                              prefix=prefix, spec=spec, carry=carry, row=row)


def decode(graphdef, state, carry, stop_mask, content_mask, prefix, until, *,
           spec: sampling_lib.DecodeSpec):
  """Decode steps up to `until` (a device value: one program for every call)."""
  return sampling_lib.decode(graphdef, state, carry, stop_mask, content_mask, prefix=prefix,
                             spec=spec, until=until)


def forward_last(graphdef, state, tokens, positions, key_start, prefix):
  """Logits of the last slot of each row."""
  return model_lib.forward(graphdef, state, tokens, positions, key_start, prefix=prefix,
                           last_only=True)[0]
