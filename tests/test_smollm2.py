"""The embedded SmolLM2-135M-Instruct: parity with transformers, and one real round."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inversion_jax.decode import sampling
from inversion_jax.loop import experiment
from inversion_jax.nn import model as model_lib

torch = pytest.importorskip('torch')

PROMPTS = [
    'Tool: nmap\nTask: Do a service version scan on 10.0.0.5\nCommand:',
    'The capital of France is',
    'gobuster dir -u http://target.local -w /usr/share/wordlists/dirb/common.txt',
    '<|im_start|>user\nWrite a haiku about port scanners.<|im_end|>\n<|im_start|>assistant\n',
]


@pytest.fixture(scope='module')
def ours(smollm2_loaded):
  config, params = smollm2_loaded
  return model_lib.from_flat_params(config, params)


@pytest.mark.parametrize('prompt', PROMPTS)
@pytest.mark.slow
def test_logits_match_transformers(ours, smollm2_tokenizer, smollm2_transformers, prompt):
  graphdef, state = ours
  ids = smollm2_tokenizer.encode(prompt)
  with torch.no_grad():
    expected = smollm2_transformers(torch.tensor([ids])).logits[0].numpy()
  got, _, _ = jax.jit(model_lib.forward, static_argnums=0)(
      graphdef, state, jnp.asarray([ids]), jnp.arange(len(ids))[None])
  rel = np.abs(np.asarray(got[0]) - expected).max() / np.abs(expected).max()
  assert rel < 1e-3, rel


@pytest.mark.slow
def test_thirty_greedy_tokens_match_transformers(ours, smollm2_tokenizer, smollm2_transformers):
  graphdef, state = ours
  eos = smollm2_tokenizer.eos_ids
  only_eos = jnp.zeros((49152,), bool).at[jnp.asarray(eos)].set(True)
  for prompt in PROMPTS[:2]:
    ids = smollm2_tokenizer.encode(prompt)
    with torch.no_grad():
      reference = smollm2_transformers.generate(
          torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
          max_new_tokens=30, do_sample=False, pad_token_id=eos[0])[0, len(ids):].tolist()
    gen = sampling.jit_generate(graphdef, state, jnp.asarray([ids]), jnp.zeros((1,), jnp.int32),
                                jax.random.key(0), only_eos,
                                spec=sampling.DecodeSpec(sampling.SamplingConfig(0.0, 30), eos[0]))
    length = int(gen.lengths[0])
    reference = reference[: reference.index(eos[0])] if eos[0] in reference else reference
    assert np.asarray(gen.tokens[0, :length]).tolist() == reference


@pytest.mark.slow
def test_one_round_on_the_embedded_model(smollm2_loaded, smollm2_tokenizer, tmp_path):
  """A real (short) round: commands and reconstructions are text, scores lie in [0, 1],
  the held-out evaluation grades the base model and the round."""
  config, params = smollm2_loaded
  run = experiment.RunConfig(cycles=1, tasks=2, candidates=2, max_new_tokens=24,
                             eval_split='small', eval_tasks=9, output=str(tmp_path),
                             name='smollm2')
  result = experiment.run(run, model_source=(config, params, smollm2_tokenizer))
  record = result.rounds[0]
  rows = record['examples']
  assert len(rows) == 4
  assert all(r['command'] for r in rows) and all(r['reconstruction'] for r in rows)
  assert all(0.0 <= r['score'] <= 1.0 for r in rows)
  metrics = record['metrics']
  for phase in ('before', 'after'):
    assert 0.0 <= metrics[f'{phase}/mean_score'] <= 1.0
    assert metrics[f'{phase}/tokens_generated'] > 0
  for phase in ('base', 'heldout'):
    assert metrics[f'{phase}/num_graded'] == 9 and 0.0 <= metrics[f'{phase}/quality'] <= 1.0


def test_prompts_are_the_joined_texts_ids(smollm2_loaded, smollm2_tokenizer):
  """GPT-2's regex splits the header's final '\n\n' differently when a word follows: every
  row the sampler sees must still be exactly the ids of the joined prompt text."""
  from inversion_jax.decode import generation, prompts
  config, params = smollm2_loaded
  graphdef, state = model_lib.from_flat_params(config, params)
  gen = generation.Generator(graphdef, state, smollm2_tokenizer, show_progress=False)
  for style in ('fewshot', 'original'):
    rows = [prompts.get_style(style).generation('nmap', f'Scan 10.0.0.{i} for open ports')
            for i in range(3)]
    head, ids = gen._split_rows(rows[0].prefix, [r.suffix for r in rows])
    assert head, style  # The shared header stays shared.
    for row, row_ids in zip(rows, ids):
      assert list(head) + row_ids == smollm2_tokenizer.encode(row.text), style


@pytest.mark.slow
def test_preset_original_round_on_the_embedded_model(smollm2_loaded, smollm2_tokenizer, tmp_path):
  """--preset=original on the embedded model (sizes cut for time) writes the original's fields."""
  import json
  from inversion_jax.loop import presets
  from inversion_jax.records import history
  config, params = smollm2_loaded
  explicit = dict(cycles=1, tasks=2, candidates=1, max_new_tokens=24, eval_every=0)
  run = presets.apply(experiment.RunConfig(**explicit, output=str(tmp_path), name='original'),
                      'original', explicit)
  assert run.generation.top_k == 50 and run.generation.prompt_style == 'original'
  assert not run.generation.stop_at_newline
  experiment.run(run, model_source=(config, params, smollm2_tokenizer))
  progress = json.loads((tmp_path / 'original' / history.PROGRESS_FILE).read_text())
  cycle = progress['history']['cycles'][0]
  assert progress['last_completed_cycle'] == 1 and progress['history']['total_generated'] == 4
  assert cycle['before']['total_generated'] == 2 and 0 <= cycle['after']['mean_score'] <= 1
  assert {'tool', 'task', 'command', 'reconstructed_task', 'intrinsic_score'} == set(
      cycle['example_before'][0])
