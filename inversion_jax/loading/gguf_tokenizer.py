"""Rebuilds a byte-level BPE `tokenizers.Tokenizer` from GGUF metadata.

A GGUF carries no tokenizer.json, only llama.cpp's `tokenizer.ggml.*` keys: the vocabulary
(already spelled in GPT-2's byte-to-unicode alphabet), the merges, token types, special ids and
a pre-tokenizer *name*. The name selects the split regex llama.cpp uses (llama-vocab.cpp); we
map it to the same `tokenizers` pre-tokenizer the model's original tokenizer.json had.
"""

import dataclasses

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from inversion_jax.errors import UserError
from inversion_jax.loading import gguf_loader

# llama.cpp token types (llama_token_type).
_CONTROL = 3
_USER_DEFINED = 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _gpt2():
  """GPT-2's own regex, applied by the ByteLevel pre-tokenizer."""
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2():
  """llama.cpp's SMOLLM/STARCODER family: every \\p{N} char alone, then GPT-2's regex.

  This is also what SmolLM2's own tokenizer.json does (Digits(individual_digits) + ByteLevel).
  """
  return pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(r'\p{N}'), behavior='isolated'),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
  ])


def _split_then_bytes(pattern: str):
  return lambda: pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(pattern), behavior='isolated'),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])


# `tokenizer.ggml.pre` -> pre-tokenizer, following llama.cpp's grouping of these names.
PRE_TOKENIZERS = {
    'default': _gpt2, 'gpt2': _gpt2, 'gpt-2': _gpt2,
    'smollm': _digits_then_gpt2, 'starcoder': _digits_then_gpt2, 'refact': _digits_then_gpt2,
    'command-r': _digits_then_gpt2, 'codeshell': _digits_then_gpt2,
    'llama3': _split_then_bytes(_LLAMA3_SPLIT), 'llama-v3': _split_then_bytes(_LLAMA3_SPLIT),
    'llama-bpe': _split_then_bytes(_LLAMA3_SPLIT), 'smaug-bpe': _split_then_bytes(_LLAMA3_SPLIT),
    'qwen2': _split_then_bytes(_QWEN2_SPLIT),
}


@dataclasses.dataclass(frozen=True)
class GGUFTokenizerInfo:
  """What the `Tokenizer` wrapper needs besides the backend."""

  backend: Tokenizer
  bos_id: int | None
  eos_ids: tuple[int, ...]
  pad_id: int | None
  chat_template: str | None


def _special_ids(reader: gguf.GGUFReader) -> tuple[int | None, tuple[int, ...], int | None]:
  def field(key):
    value = gguf_loader.read_field(reader, f'tokenizer.ggml.{key}', None)
    return None if value is None else int(value)

  eos_ids = tuple(dict.fromkeys(i for i in (field('eos_token_id'), field('eot_token_id'))
                                if i is not None))
  return field('bos_token_id'), eos_ids, field('padding_token_id')


def _add_marked_tokens(backend: Tokenizer, tokens: list[str], token_types: list[int]) -> None:
  """Registers control tokens as special and user-defined ones as plain added tokens.

  Either way text holding them (e.g. '<|im_start|>' in a chat prompt) maps to their single id,
  as in llama.cpp; only special ones are dropped by `decode(skip_special_tokens=True)`.
  """
  marked = [(token, kind) for token, kind in zip(tokens, token_types)
            if kind in (_CONTROL, _USER_DEFINED)]
  backend.add_special_tokens(
      [AddedToken(t, special=True, normalized=False) for t, kind in marked if kind == _CONTROL])
  backend.add_tokens(
      [AddedToken(t, special=False, normalized=False) for t, kind in marked if kind != _CONTROL])


def build_backend(reader: gguf.GGUFReader) -> GGUFTokenizerInfo:
  """The tokenizer described by a GGUF's metadata, plus its special ids and chat template."""
  kind = gguf_loader.read_field(reader, 'tokenizer.ggml.model', None)
  if kind != 'gpt2':
    raise UserError(f'GGUF tokenizer model {kind!r} is not supported, only byte-level BPE '
                    "('gpt2'); load this model from its Hugging Face checkpoint directory")
  pre = gguf_loader.read_field(reader, 'tokenizer.ggml.pre', 'default')
  if pre not in PRE_TOKENIZERS:
    raise UserError(f'GGUF pre-tokenizer {pre!r} is not supported (known: '
                    f'{", ".join(sorted(PRE_TOKENIZERS))}); load the HF checkpoint instead')
  tokens = gguf_loader.read_field(reader, 'tokenizer.ggml.tokens')
  merges = gguf_loader.read_field(reader, 'tokenizer.ggml.merges')
  token_types = gguf_loader.read_field(reader, 'tokenizer.ggml.token_type', [])
  vocab = {}
  for index, token in enumerate(tokens):
    vocab.setdefault(token, index)
  merge_pairs = [tuple(merge.split(' ', 1)) for merge in merges]
  backend = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False))
  backend.pre_tokenizer = PRE_TOKENIZERS[pre]()
  backend.decoder = decoders.ByteLevel()
  _add_marked_tokens(backend, tokens, token_types)
  bos_id, eos_ids, pad_id = _special_ids(reader)
  template = gguf_loader.read_field(reader, 'tokenizer.chat_template', None)
  return GGUFTokenizerInfo(backend, bos_id, eos_ids, pad_id, template)
