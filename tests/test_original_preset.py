"""--preset=original and its parts: top-k, stopping at EOS, cleaning, clipping, LoRA init,
the original's task bank, its output names."""

import collections
import dataclasses
import json
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inversion_jax.decode import generation, sampling
from inversion_jax.errors import UserError
from inversion_jax.loop import experiment, presets
from inversion_jax.nn import lora as lora_lib
from inversion_jax.nn import model as model_lib
from inversion_jax.nn.config import ModelConfig
from inversion_jax.records import files
from inversion_jax.records import history
from inversion_jax.scoring import text as text_lib
from inversion_jax.tasks import bank as bank_lib
from inversion_jax.train import training
from tests.tiny_run import TINY_FLAGS, config_for
from tests.tiny import ByteTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent

# TASK_TEMPLATES of the original's intrinsic_self_improvement.py, verbatim ({target} of the
# web tools is our {web_target}: the original filled it from SAMPLE_WEB_TARGETS).
ORIGINAL_TEMPLATES = {
    'nmap': ['Scan {target} for open ports', 'Do a service version scan on {target}',
             'Scan ports {ports} on {target}', 'Run a SYN scan on {target}',
             'Detect the operating system of {target}', 'Scan {target} for the top 100 ports',
             'Do an aggressive scan of {target}', 'Scan {target} quickly with timing template 4'],
    'nikto': ['Scan {target} for web vulnerabilities', 'Run a web vulnerability scan on {target}',
              'Check {target} for common web issues', 'Scan the web server at {target}'],
    'gobuster': ['Brute force directories on {target}', 'Find hidden paths on {target}',
                 'Enumerate directories on {target} using wordlist {wordlist}',
                 'Discover web paths on {target}'],
    'dirb': ['Scan {target} for directories', 'Enumerate web directories on {target}',
             'Find hidden directories on {target}'],
    'netcat': ['Check if port {port} is open on {target}',
               'Test connectivity to {target} on port {port}', 'Listen on port {port}',
               'Connect to {target} on port {port}'],
    'searchsploit': ['Find exploits for {software}', 'Search for vulnerabilities in {software}',
                     'Look up exploits for {software} version {version}'],
    'hydra': ['Brute force SSH on {target}', 'Attack FTP login on {target}',
              'Crack {service} password on {target}'],
    'sqlmap': ['Test {target} for SQL injection', 'Check if {target} is vulnerable to SQLi',
               'Enumerate databases on {target}'],
    'masscan': ['Scan {target} for all ports quickly', 'Fast port scan of {target}',
                'Scan {target} at high speed'],
}
SAMPLE_PORTS = {'22', '80', '443', '8080', '21', '25', '3306'}


def test_original_bank_has_the_original_35_templates():
  bank = bank_lib.named_bank('original')
  ours = {t.name: [tpl.text.replace('{web_target}', '{target}') for tpl in t.templates]
          for t in bank.tools}
  assert ours == ORIGINAL_TEMPLATES
  assert sum(map(len, ours.values())) == 35 and bank.sampling == 'tool_then_template'


def test_original_sampling_is_tool_then_template_with_its_pools():
  bank = bank_lib.named_bank('original')
  tasks = bank_lib.sample_tasks(bank, 2700, seed=0)
  tools = collections.Counter(t.tool for t in tasks)
  assert set(tools) == set(ORIGINAL_TEMPLATES)
  assert all(240 <= n <= 360 for n in tools.values()), tools  # ~300 each: uniform over tools.
  nmap = collections.Counter(t.text.split(' 1')[0][:12] for t in tasks if t.tool == 'nmap')
  assert len(nmap) >= 6  # Templates uniform within a tool (8 of them; prefixes may merge).
  ports = [t.slots['ports'].split(',') for t in tasks if 'ports' in t.slots]
  assert ports and all(2 <= len(p) <= 4 and len(set(p)) == len(p) for p in ports)
  assert set().union(*map(set, ports)) == SAMPLE_PORTS
  web = [t for t in tasks if t.tool in ('nikto', 'gobuster', 'dirb', 'sqlmap')]
  assert all(re.search(r'http://\S+', t.text) for t in web)
  assert bank_lib.sample_tasks(bank, 20, seed=3) == bank_lib.sample_tasks(bank, 20, seed=3)


def test_unknown_task_bank_is_a_user_error():
  with pytest.raises(UserError, match='task bank'):
    bank_lib.named_bank('mine')


@pytest.mark.parametrize('vocab', [300, 49152, 50000])
def test_kth_largest_matches_top_k(vocab):
  logits = jax.random.normal(jax.random.key(vocab), (5, vocab))
  logits = logits.at[0, :60].set(3.0)  # Ties around the k-th value.
  for k in (1, 50):
    expected = jax.lax.top_k(logits, k)[0][:, -1]
    np.testing.assert_array_equal(sampling.kth_largest(logits, k), expected)


def test_top_k_50_never_picks_outside_the_top_50():
  logits = jax.random.normal(jax.random.key(0), (8, 20000)) * 3.0  # > TOP_K_CHUNK: chunked.
  config = sampling.SamplingConfig(temperature=1.0, top_k=50)
  top = np.asarray(jax.lax.top_k(logits, 50)[1])
  # The logits are an argument: closed over, XLA constant-folds their sort (~30 s).
  pick = jax.jit(jax.vmap(lambda x, seed: sampling.pick_tokens(
      x, sampling.row_keys(jax.random.key(seed), 8), config), in_axes=(None, 0)))
  picks = np.asarray(pick(logits, jnp.arange(100)))  # [100 draws, 8 rows] in one call.
  for row in range(8):
    assert set(picks[:, row]) <= set(top[row])
    assert len(set(picks[:, row])) > 10  # It does sample, not just take the argmax.


@pytest.mark.slow
def test_stopping_at_eos_continues_the_newline_stopped_rows():
  graphdef, state = model_lib.create(ModelConfig.tiny(), seed=7)
  stops = tuple('aeiou ')  # Frequent stops for a random model (the loop's is '\n').
  gen = generation.Generator(graphdef, state, ByteTokenizer(), stop_strings=stops,
                             show_progress=False)
  prompts = [('Q: ', f'row {i}\nA:') for i in range(6)]
  hot = sampling.SamplingConfig(temperature=1.0, max_new_tokens=40)
  cut = gen.generate(prompts, hot, seed=1)
  full = gen.generate(prompts, dataclasses.replace(hot, stop_at_newline=False), seed=1)
  assert sum(full.num_tokens) > sum(cut.num_tokens)
  assert any(stop in text.lstrip() for text in full.texts for stop in stops)
  for short, long, n_short, n_long in zip(cut.texts, full.texts, cut.num_tokens, full.num_tokens):
    assert long.lstrip().startswith(short) and n_long >= n_short


def test_original_cleaning_is_verbatim():
  raw = '```bash\n"nmap -sV `host`"\nmore'
  assert text_lib.clean_command_original(raw) == 'bash'  # The fence line is kept, as there.
  assert text_lib.clean_command_original(' "nmap -sV `h`" \nx') == 'nmap -sV h'
  assert text_lib.clean_command_original("'nmap'") == "'nmap'"  # Only double quotes.
  assert text_lib.clean_command(raw) == 'nmap -sV host'  # Ours skips the fence.


def test_clipping_matches_optax_clip_by_global_norm():
  params = {'a': jnp.zeros((2,)), 'b': jnp.zeros((1,))}
  steps = [{'a': jnp.array([3.0, 4.0]), 'b': jnp.array([12.0])},  # Global norm 13: clipped.
           {'a': jnp.array([0.3, -0.4]), 'b': jnp.array([0.0])}]  # Norm 0.5: not clipped.

  def run(optimizer):
    state, out = optimizer.init(params), []
    for grads in steps:
      updates, state = optimizer.update(grads, state, params)
      out.append(updates)
    return out

  ours = run(training.make_optimizer(training.TrainConfig(learning_rate=0.1, max_grad_norm=1.0)))
  reference = run(optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.0)))
  plain = run(training.make_optimizer(training.TrainConfig(learning_rate=0.1)))
  for mine, theirs in zip(ours, reference):
    for key in params:
      np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-6)
  assert not np.allclose(plain[1]['a'], ours[1]['a'])  # Clipping changed Adam's moments.
  clipped, _ = optax.clip_by_global_norm(1.0).update(steps[0], None)
  np.testing.assert_allclose(clipped['a'], [3 / 13, 4 / 13], rtol=1e-6)
  with pytest.raises(ValueError, match='max_grad_norm'):
    training.TrainConfig(max_grad_norm=0.0)


@pytest.mark.parametrize('init,bound', [('peft', lambda n: 1 / np.sqrt(n)),
                                        ('he', lambda n: np.sqrt(6 / n))])
def test_lora_init_ranges(init, bound):
  config = ModelConfig.tiny(embed_dim=256)
  graphdef, state = model_lib.create(config, seed=0)
  graphdef, state = lora_lib.add_lora(graphdef, state, lora_lib.LoRAConfig(rank=8, init=init))
  _, lora, _ = lora_lib.split_lora(graphdef, state)
  a = np.concatenate([np.asarray(x).ravel() for path, x in jax.tree_util.tree_leaves_with_path(
      lora) if 'q_proj' in jax.tree_util.keystr(path) and "'a'" in jax.tree_util.keystr(path)])
  limit = bound(256)
  assert np.abs(a).max() <= limit and np.abs(a).max() > 0.95 * limit
  assert a.dtype == np.float32  # Float32 master adapters, whatever the model's dtype.


def test_preset_fills_only_what_was_not_given():
  config = presets.apply(experiment.RunConfig(tasks=7), 'original', explicit=['tasks'])
  assert config.preset == 'original' and config.tasks == 7
  generation_settings = config.generation
  assert (generation_settings.top_k, generation_settings.stop_at_newline,
          config.train.max_grad_norm, config.lora.lora_init, config.task_bank,
          generation_settings.prompt_style, config.scoring.command_cleaning) == (
              50, False, 1.0, 'peft', 'original', 'original', 'original')
  assert presets.apply(experiment.RunConfig(), 'none') == experiment.RunConfig()
  with pytest.raises(UserError, match='preset'):
    presets.apply(experiment.RunConfig(), 'faithful')


@pytest.mark.slow
def test_preset_original_run_writes_the_originals_fields(tiny_gguf, tmp_path):  # noqa: F811
  explicit = ['cycles', 'tasks', 'candidates', 'threshold', 'max_new_tokens']
  config = presets.apply(config_for(tiny_gguf, tmp_path, cycles=1, threshold=0.0),
                         'original', explicit)
  assert config.generation.top_k == 50 and config.task_bank == 'original'
  experiment.run(config)
  progress = json.loads((config.run_dir / history.PROGRESS_FILE).read_text())
  assert progress['last_completed_cycle'] == 1 and 'timestamp' in progress
  block = progress['history']
  assert block['total_generated'] == 2 * TINY_FLAGS['tasks'] * TINY_FLAGS['candidates']
  assert block['config']['similarity_threshold'] == 0.0
  assert block['config']['num_candidates_per_task'] == TINY_FLAGS['candidates']
  cycle = block['cycles'][0]
  for phase in ('before', 'after'):
    assert set(cycle[phase]) == {'total_generated', 'accepted', 'acceptance_rate', 'mean_score'}
  assert set(cycle['improvement']) == {
      'before_mean_score', 'after_mean_score', 'score_improvement', 'before_acceptance_rate',
      'after_acceptance_rate', 'acceptance_improvement'}
  assert len(cycle['example_before']) == 3 and set(cycle['example_before'][0]) == {
      'tool', 'task', 'command', 'reconstructed_task', 'intrinsic_score'}
  assert {r['tool'] for r in files.read_rows(config.run_dir / 'rows' / 'round_001_before.jsonl')
          } <= set(ORIGINAL_TEMPLATES)
  results = json.loads((config.run_dir / history.RESULTS_FILE).read_text())
  assert results['cycles'] == block['cycles'] and results['total_accepted'] == block['total_accepted']


@pytest.mark.parametrize('flag,message', [
    ('--preset=faithful', 'preset'), ('--top_k=0', 'top_k'), ('--max_grad_norm=-1', 'max_grad_norm'),
    ('--task_bank=mine', 'task_bank')])
@pytest.mark.slow
def test_bad_original_flags_are_one_line(flag, message, tmp_path):
  result = subprocess.run([sys.executable, str(ROOT / 'experiments' / 'self_improve.py'), flag,
                           f'--output={tmp_path}', '--name=x'], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
  assert result.returncode != 0 and 'Traceback' not in result.stderr, result.stderr[-1500:]
  assert message in result.stderr.strip().splitlines()[0] or message in result.stderr
  assert not (tmp_path / 'x').exists()
