"""The original experiment's set-up (presets.ORIGINAL; `--preset=original` is the shorthand).

Its prompts, task bank, top-k 50, generation to EOS, command cleaning, clipping 1.0, PEFT's
LoRA init, 10 cycles x 50 tasks x 3 candidates at threshold 0.5. The differences that remain
are in docs/driver.md "Where we differ from the original, and why".
"""

from inversion_jax.loop import config_files


def get_config():
  config = config_files.base(preset='original')
  config.name = 'original'
  return config
