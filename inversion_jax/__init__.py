"""inversion_jax: self-improvement via inversion in JAX/Flax, with the Goodhart gap measured.

The few names a library user needs, imported on first use (so `import inversion_jax` stays
cheap and submodules can set JAX flags first):

  import inversion_jax as ij
  config, params, tokenizer = ij.load_model('smollm2-135m-instruct')
  history = ij.run(ij.RunConfig(cycles=2, tasks=8, name='mine'))
"""

import importlib

_EXPORTS = {
    'RunConfig': ('inversion_jax.loop.run_config', 'RunConfig'),
    'run': ('inversion_jax.loop.experiment', 'run'),
    'apply_preset': ('inversion_jax.loop.presets', 'apply'),
    'load_model': ('inversion_jax.nn.loading.registry', 'load_model_source'),
    'from_flat_params': ('inversion_jax.nn.model', 'from_flat_params'),
    'Generator': ('inversion_jax.decode.generation', 'Generator'),
    'SamplingConfig': ('inversion_jax.decode.sampling', 'SamplingConfig'),
    'validate': ('inversion_jax.quality.validator', 'validate'),
    'evaluate_model': ('inversion_jax.quality.evaluation', 'evaluate_model'),
    'load_heldout': ('inversion_jax.quality.heldout', 'load'),
    'get_filter': ('inversion_jax.loop.selection', 'get_filter'),
    'ThresholdFilter': ('inversion_jax.loop.selection', 'ThresholdFilter'),
    'ReproducibilityFilter': ('inversion_jax.loop.selection', 'ReproducibilityFilter'),
    'UserError': ('inversion_jax.errors', 'UserError'),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f'module inversion_jax has no attribute {name!r}')
  module, attribute = _EXPORTS[name]
  value = getattr(importlib.import_module(module), attribute)
  globals()[name] = value
  return value


def __dir__():
  return __all__
