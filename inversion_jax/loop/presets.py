"""Named sets of run settings; `original` is the original experiment's exact set-up.

A preset fills only the settings the user did not give: explicit flags still win. Every
setting a preset touches is a `RunConfig` field (and a flag) of its own. The remaining
deliberate differences from the original are in docs/driver.md, "Where we differ from the
original, and why".
"""

from inversion_jax.errors import UserError

# intrinsic_self_improvement.py in CINOAdam/inversion-self-improvement (its argparse
# defaults, SelfImprovementConfig, IntrinsicScorer, TrainingArguments, LoraConfig), and
# transformers' `generate` defaults it ran with (top_k 50, top_p 1.0, stop at EOS only).
ORIGINAL = {
    'prompt_style': 'original',  # Its three zero-shot prompts, verbatim.
    'task_bank': 'original',  # Its 35 templates, pools and tool-then-template sampling.
    'top_k': 50,
    'top_p': None,
    'stop_at_newline': False,  # generate() ran to EOS / max_new_tokens; first line kept.
    'command_cleaning': 'original',
    'max_grad_norm': 1.0,  # HF Trainer's default.
    'lora_init': 'peft',
    'bos': 'tokenizer',  # HF's tokenizer(prompt): BOS where the tokenizer adds one.
    'cycles': 10, 'tasks': 50, 'candidates': 3, 'threshold': 0.5, 'temperature': 0.7,
    'max_new_tokens': 100, 'judge': 'sample', 'weights': (0.2, 0.3, 0.5),
    'filter': 'threshold', 'scorer': 'reconstruction',
    'lr': 2e-4, 'batch_size': 4, 'epochs': 1, 'completion_only': False,
    'lora_rank': 16, 'lora_alpha': 32.0, 'lora_dropout': 0.05,
    'after_every': 1,  # Its before/after per cycle.
}
PRESETS = {'none': {}, 'original': ORIGINAL}


def check(name: str) -> dict:
  """The preset's settings; an unknown name is a user mistake."""
  if name not in PRESETS:
    raise UserError(f'unknown preset {name!r}; choose one of {", ".join(PRESETS)}')
  return PRESETS[name]


def apply(config, name: str, explicit=()):
  """`config` with the preset's settings, except those named in `explicit`."""
  settings = {key: value for key, value in check(name).items() if key not in set(explicit)}
  return config.replace(preset=name, **settings)
