"""Tiny stand-ins for tests: a byte tokenizer that fits `ModelConfig.tiny()`, LoRA on the tiny
model, training examples."""

from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from inversion_jax.train import training


class ByteTokenizer:
  """Ids 0-2 are pad/bos/eos; byte b is id b + 3. Vocab 259 fits the tiny config."""

  bos_id, pad_id, eos_ids = 1, 0, (2,)
  vocab_size = 259

  def encode(self, text, add_bos=False):
    return ([self.bos_id] if add_bos else []) + [b + 3 for b in text.encode('utf-8')]

  def split_joined(self, prefix, text):
    """Bytes never merge: the joined text's ids are the two parts' ids."""
    return tuple(self.encode(prefix)), self.encode(text)

  def decode(self, ids, skip_special_tokens=True):
    return bytes(i - 3 for i in ids if i >= 3 and i < 259).decode('utf-8', errors='replace')

  def token_texts(self):
    return ['<pad>', '<s>', '</s>'] + [bytes([b]).decode('latin-1') for b in range(256)]


def tiny_lora(dropout=0.0, config=None):
  graphdef, state = model_lib.create(config or ModelConfig.tiny(), seed=0)
  graphdef, state = lora_lib.add_lora(graphdef, state, lora_lib.LoRAConfig(rank=4, dropout=dropout))
  return lora_lib.split_lora(graphdef, state)


def examples(n=8):
  tok = ByteTokenizer()
  rows = [(f'Task: scan host {i}\nCommand:', f' nmap -sV 10.0.0.{i}') for i in range(n)]
  return [training.make_example(tok, p, c) for p, c in rows]
