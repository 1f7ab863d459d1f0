"""experiments/benchmark_round.py on a tiny random GGUF model: stages, ratios, the reference.

The real benchmark (SmolLM2, 300-row rounds) takes many minutes; here its pieces run on a
tiny model with tiny configs, and the reference pipeline's EOS and first-line handling is
checked with scripted LM heads.
"""

import importlib.util
import json
import math
import pathlib

import pytest

from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import registry
from inversion_jax.scoring import text as text_lib
from tests import tiny_checkpoints

torch = pytest.importorskip('torch')
pytest.importorskip('transformers')

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = dict(tasks=2, candidates=2, max_new_tokens=8, lora_rank=4, max_batch=8, threshold=0.0,
            eval_tasks=2)
EOS = 2  # tiny_vocab(): id 2 is <|im_end|>, the GGUF's EOS.


@pytest.fixture(scope='module')
def bench():
  spec = importlib.util.spec_from_file_location(
      'benchmark_round', ROOT / 'experiments' / 'benchmark_round.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def tiny_source(tmp_path_factory):
  """(config, flat params, tokenizer) of a tiny random Llama stored as a GGUF file."""
  config = ModelConfig.tiny(vocab_size=266, max_seq_len=2048, tie_embeddings=True)
  path = tmp_path_factory.mktemp('model') / 'tiny.gguf'
  weights = tiny_checkpoints.random_hf_weights(config, seed=0)
  weights = {k: 0.2 * v if 'norm' not in k else 1 + 0 * v for k, v in weights.items()}
  tiny_checkpoints.write_gguf(path, config, weights)
  return registry.load_model_source(str(path))


@pytest.fixture(scope='module')
def hf(bench, tiny_source):
  config, flat, _ = tiny_source
  return bench.benchmark_sampler.hf_model(config, flat)


@pytest.mark.slow
def test_benchmark_on_tiny_model(bench, tiny_source):
  short = {'generate': (8, 0.7), 'invert': (6, 0.3), 'rate': (3, 0.1)}
  settings = bench.Settings(
      model='tiny', configs=('demo', 'dose'), repeats=2, reference_rows=1, floor_batch=8,
      floor_prefill_len=16, floor_steps=2, floor_repeats=1, reference_steps=short,
      reference_train_steps=1, reference_train_len=64,
      overrides={'demo': TINY, 'dose': {k: v for k, v in TINY.items() if k != 'threshold'} | dict(
          candidates=1, eval_split='small')})
  results = bench.run_benchmark(settings, model_source=tiny_source)
  json.loads(json.dumps(results))  # JSON-ready as it is.
  assert results['machine']['cpu_count'] >= 1 and 'jax' in results['machine']
  dose = results['configs']['dose']
  calibration = dose['calibration']  # 60 % of 2 candidates: both kept, and both trained.
  assert calibration['accepted'] == 2 and dose['config']['threshold'] == calibration['threshold']
  assert dose['first']['metrics']['train/num_examples'] == 2
  assert dose['reference_train']['steps_per_round'] == 1 and dose['reference_train'][
      'seconds_scaled'] > 0
  assert dose['work']['train_flops'] > 0 and results['floor']['matmul_flop_s'] > 0
  for key in ('train_over_floor', 'reference_train_over_ours',
              'reference_pipeline_over_ours_round'):
    assert math.isfinite(dose['ratios']['first'][key]) and dose['ratios']['first'][key] > 0
  for name, rows in (('demo', 8), ('dose', 4)):
    entry = results['configs'][name]
    assert entry['rows_per_round'] == rows
    assert len(entry['runs']) == 2
    for which in ('first', 'steady'):
      timings = entry[which]['timings']
      assert set(bench.STAGES) <= set(timings), timings
      assert timings['total'] >= sum(timings[s] for s in bench.STAGES) * 0.99
    tokens = entry['first']['tokens']
    assert 0 < tokens["before"] <= rows // 2 * (8 + 50 + 5)  # Our generate/invert/rate budgets.
    assert entry['runs'][1]['tokens'] == tokens  # Same seeds and adapters: the same work.
    assert entry['first']['compiles']['backend_compiles'] >= entry['runs'][1]['compiles'][
        'backend_compiles']
    assert entry['work']['prefill_tokens'] > 0 and entry['work']['decode_tokens'] > 0
    assert entry['work']['signal_prefill_tokens'] > 0  # KL's probe, the round's weights.
    for which in ('first', 'steady'):
      for key in ('reference_eos_over_ours', 'reference_forced_over_ours', 'ours_over_floor',
                  'generation_over_floor'):
        value = entry['ratios'][which][key]
        assert value is not None and math.isfinite(value) and value > 0, (name, which, key)
    scaled = entry['reference_scaled']
    assert scaled['forced']['total'] == pytest.approx(
        sum(scaled['forced'][s] for s in bench.SCORING_STAGES))
  floor = results['floor']
  assert floor['decode_tok_s'] > 0 and floor['prefill_tok_s'] > 0
  reference = results['reference']
  forced = reference['forced']['tokens_per_row']
  assert forced == {'generate': 8, 'invert': 6, 'rate': 3}  # Full budgets, every call.
  eos = reference['eos']['tokens_per_row']
  assert all(1 <= eos[s] <= forced[s] for s in forced)
  (row,) = reference['eos']['rows']
  assert '\n' not in row['command'] and '\n' not in row['reconstruction']
  assert 0.0 <= row['score'] <= 1.0
  table = bench.format_table(results)
  assert '## demo' in table and '## dose' in table and 'ref forced' in table
  assert 'reference training' in table and 'train/floor' in table


def test_completion_ids_cut_at_the_first_eos(bench):
  assert bench.completion_ids([7, 7, 5, 6, EOS, 9, EOS], 2, (EOS,)) == ([5, 6], 5)
  assert bench.completion_ids([7, 5, 6], 1, (EOS,)) == ([5, 6], 2)
  assert bench.completion_ids([7, EOS], 1, (EOS, 3)) == ([], 1)


class ScriptedHead(torch.nn.Module):
  """An LM head that makes call t pick script[t] (the last one afterwards), whatever the input."""

  def __init__(self, vocab: int, script: list[int]):
    super().__init__()
    self.vocab, self.script, self.calls = vocab, script, 0

  def forward(self, hidden):
    token = self.script[min(self.calls, len(self.script) - 1)]
    self.calls += 1
    logits = torch.zeros(*hidden.shape[:-1], self.vocab)
    logits[..., token] = 1e4
    return logits


def test_reference_keeps_the_first_line_and_stops_at_eos(bench, tiny_source, hf):
  _, _, tokenizer = tiny_source
  ids = tokenizer.encode('ab\ncd')
  original_head = hf.lm_head
  try:
    hf.lm_head = ScriptedHead(hf.config.vocab_size, ids + [EOS, *tokenizer.encode('zz')])
    text, produced, seconds = bench.reference_generate(
        hf, tokenizer, 'Tool: nmap', 20, 0.7, False, False, (EOS,))
    assert (text, produced) == ('ab\ncd', len(ids) + 1)  # Stopped at EOS, EOS included.
    assert seconds > 0 and text_lib.clean_command(text) == 'ab'  # The first line is kept.

    hf.lm_head = ScriptedHead(hf.config.vocab_size, [EOS])
    text, produced, _ = bench.reference_generate(hf, tokenizer, 'Tool: nmap', 12, 0.3, False,
                                                 False, (EOS,))
    assert (text, produced) == ('', 1)
    hf.lm_head = ScriptedHead(hf.config.vocab_size, [EOS])  # min_new_tokens bans EOS ...
    _, produced, _ = bench.reference_generate(hf, tokenizer, 'Tool: nmap', 12, 0.3, True, False,
                                              (EOS,))
    assert produced == 12  # ... so the forced variant runs its whole budget.
  finally:
    hf.lm_head = original_head

