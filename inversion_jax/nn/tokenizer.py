"""One tokenizer interface for GGUF files and HF checkpoints.

It wraps a `tokenizers.Tokenizer` (Rust, fast batch encoding) plus the special ids and chat
template the sampler and prompts need, so nothing downstream depends on transformers.
"""

import functools
import json
import os
import pathlib
from typing import Any, Sequence

import gguf
import jinja2
import jinja2.ext
import jinja2.sandbox
import tokenizers

from inversion_jax.errors import UserError
from inversion_jax.nn.loading import gguf_loader, gguf_tokenizer


class Tokenizer:
  """Text <-> ids, special ids and chat formatting for one model.

  `add_bos` says whether the model's own tokenizer puts BOS before a sequence (Llama 2 and
  Mistral do, SmolLM2 does not); `encode` only adds it when asked, so callers pass
  `add_bos=tok.add_bos`.
  """

  def __init__(self, backend: tokenizers.Tokenizer, *, bos_id: int | None,
               eos_ids: Sequence[int], pad_id: int | None = None,
               chat_template: str | None = None, add_bos: bool | None = None):
    if not eos_ids:
      raise UserError('the tokenizer defines no end-of-sequence token; the checkpoint must set '
                      'eos_token_id')
    self.backend = backend
    self.bos_id = bos_id
    self.add_bos = bos_id is not None and (add_bos is None or bool(add_bos))
    self.eos_ids = tuple(int(i) for i in eos_ids)
    self.pad_id = self.eos_ids[0] if pad_id is None else int(pad_id)
    self.chat_template = chat_template

  @classmethod
  def from_gguf(cls, source: str | os.PathLike | gguf.GGUFReader) -> 'Tokenizer':
    """Rebuilds the tokenizer a GGUF file describes (path or an already-open reader).

    Byte-level BPE ('gpt2') and SentencePiece BPE ('llama') vocabularies are supported.
    """
    reader = source if isinstance(source, gguf.GGUFReader) else gguf_loader.open_gguf(source)
    info = gguf_tokenizer.build_backend(reader)
    return cls(info.backend, bos_id=info.bos_id, eos_ids=info.eos_ids, pad_id=info.pad_id,
               chat_template=info.chat_template, add_bos=info.add_bos)

  @classmethod
  def from_hf_dir(cls, path: str | os.PathLike) -> 'Tokenizer':
    """Loads tokenizer.json plus ids, BOS setting and template from an HF checkpoint directory."""
    path = pathlib.Path(path)
    backend = _hf_backend(path)
    settings = _read_json(path / 'tokenizer_config.json')
    model_config = _read_json(path / 'config.json')
    generation = _read_json(path / 'generation_config.json')

    def token_id(key):
      token = settings.get(key)
      token = token.get('content') if isinstance(token, dict) else token
      return None if token is None else backend.token_to_id(token)

    bos_id = _first_set(generation.get('bos_token_id'), model_config.get('bos_token_id'),
                        token_id('bos_token'))
    eos = _first_set(generation.get('eos_token_id'), model_config.get('eos_token_id'),
                     token_id('eos_token'))
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return cls(backend, bos_id=bos_id, eos_ids=eos_ids, pad_id=token_id('pad_token'),
               chat_template=_hf_chat_template(path, settings),
               add_bos=_hf_add_bos(path, backend, settings, bos_id))

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    ids = self.backend.encode(text, add_special_tokens=False).ids
    return self._with_bos(ids) if add_bos else ids

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
    encodings = self.backend.encode_batch(list(texts), add_special_tokens=False)
    return [self._with_bos(e.ids) if add_bos else e.ids for e in encodings]

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def decode_batch(self, batch: Sequence[Sequence[int]],
                   skip_special_tokens: bool = True) -> list[str]:
    return self.backend.decode_batch([[int(i) for i in ids] for ids in batch],
                                     skip_special_tokens=skip_special_tokens)

  def encode_after(self, prefix: str, text: str) -> list[int]:
    """The ids `text` gets when it follows `prefix` in one string.

    `encode(prefix) + encode_after(prefix, text) == encode(prefix + text)`, so a prompt prefix
    encoded (or prefilled) once can be extended without re-encoding it. This differs from
    `encode(text)` where the tokenizer treats a text's start specially: SentencePiece puts a
    dummy '▁' before every text, which must not appear mid-prompt. The prefix must end at a
    token boundary of the joined text (end it with a newline, say), else UserError.
    """
    head, rest = self.split_joined(prefix, text)
    if len(head) < len(self._prefix_ids(prefix)):
      raise UserError(f'the prompt prefix {prefix[-20:]!r} does not end at a token boundary: '
                      f'its last token merges with the start of {text[:20]!r}; end the prefix '
                      'with a newline (or move the joining characters into the text)')
    return rest

  def split_joined(self, prefix: str, text: str) -> tuple[tuple[int, ...], list[int]]:
    """(prefix ids, text ids) whose concatenation is `encode(prefix + text)`, the prefix ids
    being the longest run of `encode(prefix)` that the joined text keeps.

    Unlike `encode_after` this never fails: where a token straddles the boundary (GPT-2's
    regex splits '\n\n' before a word into '\n' '\n' but keeps it whole at the end of a
    string), the tokens from there on belong to the text's part. The sampler prefills the
    prefix part once; every row's prompt is then exactly the joined text's tokens.
    """
    head = self._prefix_ids(prefix)
    ids = self.encode(prefix + text)
    keep = 0
    while keep < min(len(head), len(ids)) and head[keep] == ids[keep]:
      keep += 1
    return head[:keep], ids[keep:]

  @functools.lru_cache(maxsize=64)  # A run has a handful of prompt headers.
  def _prefix_ids(self, prefix: str) -> tuple[int, ...]:
    return tuple(self.encode(prefix))

  @functools.cache  # pylint: disable=method-cache-max-size-none  # One list per tokenizer.
  def token_texts(self) -> list[str]:
    """Text of each id on its own (partial UTF-8 shows as U+FFFD), e.g. to find newline tokens."""
    return self.decode_batch([[i] for i in range(self.vocab_size)], skip_special_tokens=False)

  def apply_chat_template(self, messages: Sequence[dict[str, str]],
                          add_generation_prompt: bool = True, **extra: Any) -> str:
    """Renders a conversation the way the model was fine-tuned to see it."""
    if not self.chat_template:
      raise UserError('this model has no chat template; use a completion-style prompt or a '
                      'checkpoint whose tokenizer_config.json has chat_template')
    bos = self.backend.id_to_token(self.bos_id) if self.bos_id is not None else ''
    eos = self.backend.id_to_token(self.eos_ids[0])
    return _compile_template(self.chat_template).render(
        messages=list(messages), add_generation_prompt=add_generation_prompt,
        bos_token=bos, eos_token=eos, **extra)

  def _with_bos(self, ids: list[int]) -> list[int]:
    if self.bos_id is None:
      raise UserError('add_bos=True but this tokenizer has no BOS token; encode without it')
    return [self.bos_id, *ids]


def _first_set(*values):
  """The first value that is not None (ids may be 0, so `or` will not do)."""
  return next((v for v in values if v is not None), None)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except (OSError, ValueError) as error:
    raise UserError(f'{path} is not valid JSON ({error}); repair or re-download it') from error


def _hf_backend(path: pathlib.Path) -> tokenizers.Tokenizer:
  """tokenizer.json, or a sentencepiece-only checkpoint converted by transformers if present."""
  if not path.is_dir():
    raise UserError(f'{path} is not a directory; pass an HF checkpoint directory')
  if (path / 'tokenizer.json').is_file():
    try:
      return tokenizers.Tokenizer.from_file(str(path / 'tokenizer.json'))
    except Exception as error:  # The Rust loader raises a plain Exception.
      raise UserError(f'{path / "tokenizer.json"} cannot be loaded ({error}); re-download it'
                      ) from error
  try:
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    transformers = None
  if transformers is not None and (path / 'tokenizer.model').is_file():
    return transformers.AutoTokenizer.from_pretrained(str(path), use_fast=True).backend_tokenizer
  raise UserError(f'{path} has no tokenizer.json; add the tokenizer files to the checkpoint '
                  '(or install transformers to convert a tokenizer.model)')


def _hf_add_bos(path: pathlib.Path, backend: tokenizers.Tokenizer, settings: dict[str, Any],
                bos_id: int | None) -> bool:
  """tokenizer_config.json's add_bos_token, else what tokenizer.json's post-processor does.

  Without either (no flag, no post-processor) BOS is added when the model has one, as Llama-style
  checkpoints expect. The post-processor of a tokenizer converted here from tokenizer.model
  reflects transformers' defaults, not the checkpoint, so only a real tokenizer.json counts.
  """
  if bos_id is None:
    return False
  if 'add_bos_token' in settings:
    return bool(settings['add_bos_token'])
  if (path / 'tokenizer.json').is_file() and backend.post_processor is not None:
    probe = backend.encode('a', add_special_tokens=True).ids
    return probe[:1] == [bos_id]
  return True


def _hf_chat_template(path: pathlib.Path, settings: dict[str, Any]) -> str | None:
  """chat_template.jinja (newer checkpoints) or tokenizer_config.json's chat_template."""
  if (path / 'chat_template.jinja').is_file():
    return (path / 'chat_template.jinja').read_text(encoding='utf-8')
  template = settings.get('chat_template')
  if isinstance(template, list):  # Named templates: [{'name': 'default', 'template': ...}].
    named = {item.get('name'): item.get('template') for item in template}
    template = named.get('default')
  return template


def _raise_exception(message: str):
  raise UserError(f'chat template error: {message}')


@functools.lru_cache(maxsize=8)
def _compile_template(source: str) -> jinja2.Template:
  """Compiles as transformers does (sandboxed, trim/lstrip blocks) so prompts match HF's."""
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
  env.filters['tojson'] = lambda value, **kw: json.dumps(value, ensure_ascii=False, **kw)
  env.globals['raise_exception'] = _raise_exception
  return env.from_string(source)
