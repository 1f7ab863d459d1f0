"""Rebuilds a `tokenizers.Tokenizer` from GGUF metadata: byte-level BPE or SentencePiece BPE.

A GGUF carries no tokenizer.json, only llama.cpp's `tokenizer.ggml.*` keys. For byte-level BPE
('gpt2': SmolLM2, Llama 3) these are the vocabulary (already spelled in GPT-2's byte-to-unicode
alphabet), the merges, token types, special ids and a pre-tokenizer *name*. The name selects the
split regex llama.cpp uses (llama-vocab.cpp); we map it to the same `tokenizers` pre-tokenizer the
model's original tokenizer.json had.

For SentencePiece ('llama': Llama 2, TinyLlama, Mistral) there are no merges, only each piece's
score; see `_sentencepiece_backend` for how the BPE is rebuilt from them.
"""

import dataclasses

import gguf
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from inversion_jax.errors import UserError
from inversion_jax.nn.loading import gguf_loader

# llama.cpp token types (llama_token_type).
_NORMAL = 1
_UNKNOWN = 2
_CONTROL = 3
_USER_DEFINED = 4

_SPACE = '\u2581'  # SentencePiece's '▁', which stands for a space inside pieces.

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
  add_bos: bool = False


def _special_ids(reader: gguf.GGUFReader) -> tuple[int | None, tuple[int, ...], int | None]:
  def field(key):
    value = gguf_loader.read_field(reader, f'tokenizer.ggml.{key}', None)
    return None if value is None else int(value)

  eos_ids = tuple(dict.fromkeys(i for i in (field('eos_token_id'), field('eot_token_id'))
                                if i is not None))
  return field('bos_token_id'), eos_ids, field('padding_token_id')


def _add_marked_tokens(backend: Tokenizer, tokens: list[str], token_types: list[int],
                       special_types: tuple[int, ...] = (_CONTROL,)) -> None:
  """Registers control tokens as special and user-defined ones as plain added tokens.

  Either way text holding them (e.g. '<|im_start|>' in a chat prompt) maps to their single id,
  as in llama.cpp; only special ones are dropped by `decode(skip_special_tokens=True)`.
  """
  marked = [(token, kind) for token, kind in zip(tokens, token_types)
            if kind in (*special_types, _USER_DEFINED)]
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                              for t, kind in marked if kind in special_types])
  backend.add_tokens([AddedToken(t, special=False, normalized=False)
                      for t, kind in marked if kind not in special_types])


def _first_index_vocab(tokens: list[str]) -> dict[str, int]:
  """token -> id; a token listed twice keeps its first id, as llama.cpp's lookup does."""
  vocab = {}
  for index, token in enumerate(tokens):
    vocab.setdefault(token, index)
  return vocab


def _byte_level_backend(reader: gguf.GGUFReader, tokens: list[str],
                        token_types: list[int]) -> Tokenizer:
  """GPT-2 style BPE: the file's own merges over the byte alphabet, split by the named regex."""
  del token_types  # Only the specials depend on them, which the caller adds.
  pre = gguf_loader.read_field(reader, 'tokenizer.ggml.pre', 'default')
  if pre not in PRE_TOKENIZERS:
    raise UserError(f'GGUF pre-tokenizer {pre!r} is not supported (known: '
                    f'{", ".join(sorted(PRE_TOKENIZERS))}); load the HF checkpoint instead')
  merges = gguf_loader.read_field(reader, 'tokenizer.ggml.merges')
  merge_pairs = [tuple(merge.split(' ', 1)) for merge in merges]
  backend = Tokenizer(models.BPE(vocab=_first_index_vocab(tokens), merges=merge_pairs,
                                 fuse_unk=False))
  backend.pre_tokenizer = PRE_TOKENIZERS[pre]()
  backend.decoder = decoders.ByteLevel()
  return backend


def merges_from_scores(tokens: list[str], scores: list[float],
                       token_types: list[int]) -> list[tuple[str, str]]:
  """BPE merges, best first, equivalent to SentencePiece's score-driven BPE.

  SentencePiece repeatedly joins the adjacent pair whose joined piece has the highest score. A
  ranked BPE does the same if every cut of a piece into two vocabulary pieces is a merge ranked by
  the piece's score. Ties (cuts of one piece) put the longer left part first, as transformers'
  `generate_merges` does. Only normal pieces take part: SentencePiece never forms control, byte
  or unknown pieces by merging.
  """
  normal = {token for token, kind in zip(tokens, token_types) if kind == _NORMAL}
  ranked = []
  for token, index in _first_index_vocab(tokens).items():
    if token in normal:
      ranked += [(-scores[index], -cut, token[:cut], token[cut:]) for cut in range(1, len(token))
                 if token[:cut] in normal and token[cut:] in normal]
  ranked.sort(key=lambda merge: merge[:2])
  return [(left, right) for _, _, left, right in ranked]


def _sentencepiece_backend(reader: gguf.GGUFReader, tokens: list[str],
                           token_types: list[int]) -> Tokenizer:
  """llama.cpp's SentencePiece vocabulary as the tokenizer.json Llama 2 and Mistral ship.

  A dummy '▁' goes before the text and every space becomes '▁' (normalizer, no pre-tokenizer:
  SentencePiece does not split words before merging); characters missing from the vocabulary
  fall back to their UTF-8 bytes, the `<0xXX>` pieces. The decoder undoes both and drops the
  dummy space.
  """
  scores = gguf_loader.read_field(reader, 'tokenizer.ggml.scores', None)
  scores = [-float(i) for i in range(len(tokens))] if scores is None else scores
  token_types = token_types or [_NORMAL] * len(tokens)
  unk_id = gguf_loader.read_field(reader, 'tokenizer.ggml.unknown_token_id', None)
  backend = Tokenizer(models.BPE(
      vocab=_first_index_vocab(tokens), merges=merges_from_scores(tokens, scores, token_types),
      unk_token=None if unk_id is None else tokens[int(unk_id)], fuse_unk=True,
      byte_fallback=True))
  dummy_prefix = bool(gguf_loader.read_field(reader, 'tokenizer.ggml.add_space_prefix', True))
  backend.normalizer = normalizers.Sequence(
      ([normalizers.Prepend(_SPACE)] if dummy_prefix else []) + [normalizers.Replace(' ', _SPACE)])
  backend.decoder = decoders.Sequence(
      [decoders.Replace(_SPACE, ' '), decoders.ByteFallback(), decoders.Fuse()]
      + ([decoders.Strip(' ', 1, 0)] if dummy_prefix else []))
  return backend


# `tokenizer.ggml.model` -> (builder, token types that become special tokens).
_BACKENDS = {
    'gpt2': (_byte_level_backend, (_CONTROL,)),
    'llama': (_sentencepiece_backend, (_CONTROL, _UNKNOWN)),
}


def build_backend(reader: gguf.GGUFReader) -> GGUFTokenizerInfo:
  """The tokenizer described by a GGUF's metadata, plus its special ids and chat template.

  `add_bos` is the file's `add_bos_token`; without that flag it is True for SentencePiece
  vocabularies (as llama.cpp and transformers assume) and False for byte-level ones (GPT-2's
  convention).
  """
  kind = gguf_loader.read_field(reader, 'tokenizer.ggml.model', None)
  if kind not in _BACKENDS:
    raise UserError(f'GGUF tokenizer model {kind!r} is not supported, only byte-level BPE '
                    "('gpt2') and SentencePiece BPE ('llama'); load this model from its Hugging "
                    'Face checkpoint directory')
  build, special_types = _BACKENDS[kind]
  tokens = gguf_loader.read_field(reader, 'tokenizer.ggml.tokens')
  token_types = gguf_loader.read_field(reader, 'tokenizer.ggml.token_type', [])
  backend = build(reader, tokens, token_types)
  _add_marked_tokens(backend, tokens, token_types, special_types)
  bos_id, eos_ids, pad_id = _special_ids(reader)
  add_bos = gguf_loader.read_field(reader, 'tokenizer.ggml.add_bos_token', kind == 'llama')
  template = gguf_loader.read_field(reader, 'tokenizer.chat_template', None)
  return GGUFTokenizerInfo(backend, bos_id, eos_ids, pad_id, template,
                           add_bos=bool(add_bos) and bos_id is not None)
