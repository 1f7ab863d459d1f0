"""Forward passes without sampling, on a generator's placed weights and batching: the next
token's logits, mean-pooled hidden states (the embedding scorer) and the logit-lens
fidelity of given completions (the fidelity scorer)."""

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from inversion_jax.decode import batching
from inversion_jax.decode import programs
from inversion_jax.decode import sampling as sampling_lib
from inversion_jax.errors import UserError


def last_token_logits(gen, prompts: Sequence) -> np.ndarray:
  """float32 [len(prompts), V] logits of the token that would follow each prompt."""
  prompts = [batching.as_pair(p) for p in prompts]
  out = np.zeros((len(prompts), gen.config.vocab_size), np.float32)
  for prefix, rows in gen.chunks(prompts):
    batch = gen.pad_rows([prompts[i][1] for i in rows], prefix, max_new=0)
    positions = np.maximum(
        batch.prefix_len + np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None], 0)
    args = gen.backend.rows((batch.tokens, positions, batch.key_start))
    logits = gen.backend.fetch(gen.call(programs.forward_last, *args, batch.cache))[:, -1]
    out[rows] = logits[: batch.num_rows]
  return out


def embed(gen, texts: Sequence[str], layer: int, batch_size: int | None = None) -> np.ndarray:
  """float32 [len(texts), D]: layer `layer`'s hidden states mean-pooled over each text's
  own tokens (BOS and padding excluded), texts of similar length batched together.

  Cut into parts by length like a wave's prompts (at most `batch_size` rows, default the
  generator's `prefill_rows`): a round's commands run from 5 to 100 tokens, and one batch
  padded to the longest spent much of an embedding phase on padding."""
  check_layer(gen, layer)
  out = np.zeros((len(texts), gen.config.embed_dim), np.float32)
  skip = 1 if gen.add_bos else 0
  ids = [[gen.tokenizer.bos_id] * skip + gen.tokenizer.encode(t) for t in texts]
  for group in batching.parts([len(i) for i in ids], batch_size or gen.shapes.prefill_rows,
                              gen.shapes):
    batch = gen.pad_token_rows([ids[i] for i in group], 0, 0)
    positions = np.maximum(np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None], 0)
    args = gen.backend.rows((batch.tokens, positions, batch.key_start, batch.key_start + skip))
    pooled = gen.call(sampling_lib.pooled_hidden, *args, layer=layer)
    out[group] = gen.backend.fetch(pooled)[: batch.num_rows]
  return out


def fidelity(gen, prompts: Sequence, completions: Sequence[str], layer: int, k: int,
             batch_size: int = 8) -> np.ndarray:
  """float64 [N]: per (prompt, completion), the fraction of the completion's tokens in the
  top-k of the logit lens at `layer` one position before them (one forward pass)."""
  check_layer(gen, layer)
  if k < 1:
    raise UserError(f'fidelity k must be >= 1, got {k}')
  prompts = [batching.as_pair(p) for p in prompts]
  out = np.zeros((len(prompts),), np.float64)
  bar = tqdm(total=len(prompts), desc='fidelity', unit='row', disable=not gen.show_progress,
             leave=False)
  for prefix, rows in gen.chunks(prompts):
    for start in range(0, len(rows), batch_size):
      part = rows[start:start + batch_size]
      suffixes = [prompts[i][1] for i in part]
      targets = [gen.tokenizer.encode(' ' + completions[i].strip()) for i in part]
      batch = gen.pad_rows(suffixes, prefix, max_new=max(len(t) for t in targets),
                           completions=targets)
      positions = np.maximum(
          batch.prefix_len + np.arange(batch.tokens.shape[1])[None] - batch.key_start[:, None],
          0)
      width = batch.tokens.shape[1]
      lengths = [len(t) for t in targets] + [len(targets[0])] * (len(batch.tokens) - len(part))
      target_start = np.asarray([width - n for n in lengths], np.int32)
      args = gen.backend.rows((batch.tokens, positions, batch.key_start, target_start))
      values = gen.call(sampling_lib.token_fidelity, *args, batch.cache, layer=layer, k=k)
      out[part] = gen.backend.fetch(values)[: batch.num_rows]
      bar.update(len(part))
  bar.close()
  return out


def check_layer(gen, layer: int) -> None:
  if not 0 <= layer <= gen.config.num_layers:
    raise UserError(f'layer {layer} is outside the model: choose 0..{gen.config.num_layers}'
                    f' ({gen.config.num_layers} = the final norm\'s input)')
