"""The loop end to end on a tiny random model: rounds, resume after SIGKILL, bad input."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from inversion_jax import parallel
from inversion_jax.decode import generation
from inversion_jax.decode.sampling import SamplingConfig
from inversion_jax.errors import UserError
from inversion_jax.loop import experiment
from inversion_jax.nn.loading import registry
from inversion_jax.records import files
from inversion_jax.records import history, summaries
from inversion_jax.scoring import inversion
from inversion_jax.tasks import bank as bank_lib
from inversion_jax.train import training
from inversion_jax.train.checkpointing import RoundCheckpointer
from tests.tiny_run import ROOT, config_for, flag_list, round_metrics, run_driver

@pytest.mark.slow
def test_two_rounds_write_history_and_checkpoints(tiny_gguf, tmp_path):
  config = config_for(tiny_gguf, tmp_path)
  result = experiment.run(config)
  assert len(result.rounds) == 2
  for record in result.rounds:
    for phase in ('before', 'after'):
      assert 0.0 <= record['metrics'][f'{phase}/mean_score'] <= 1.0
      assert record['metrics'][f'{phase}/num_candidates'] == 6
      assert 0.0 <= record['metrics'][f'{phase}/quality'] <= 1.0
      rows = files.read_rows(files.rows_path(config.run_dir, record['cycle'], phase))
      assert len(rows) == 6
      assert {'task', 'command', 'reconstruction', 'rating', 'score', 'kept', 'verdict'} <= set(
          rows[0])
    assert record['metrics']['train/num_examples'] == 6  # threshold 0 keeps every candidate
    assert np.isfinite(record['metrics']['train/final_loss'])
    assert set(record['timings']) == {'generate', 'invert', 'rate', 'validate', 'signals', 'train',
                                      'train_new_shapes', 'total'}
    # Steps that met a new batch shape (compiled it) are part of the train stage.
    assert record['timings']['train_new_shapes'] <= record['timings']['train']
    assert 'signal/kl_from_base' in record['metrics'] and 'after/agreement_rate' in record['metrics']
  results = json.loads((config.run_dir / history.RESULTS_FILE).read_text())
  assert results['summary'] and results['cycles_completed'] == 2
  assert RoundCheckpointer(config.run_dir, config.as_dict()).all_rounds() == [1, 2]
  assert_tensorboard_has_every_metric(config.run_dir, result.rounds)


def assert_tensorboard_has_every_metric(run_dir, rounds):
  """TensorBoard's event reader finds each finite metric of each round at its step."""
  try:
    from test_summaries import read_events  # pylint: disable=g-import-not-at-top
  except pytest.skip.Exception:  # No tensorboard to read with: the rest of the test stands.
    return
  events = read_events(run_dir)
  for record in rounds:
    for tag, value in summaries.scalars(record).items():
      step = 0 if tag.startswith('base/') else record['cycle']
      assert (step, pytest.approx(value)) in [(e.step, e.value) for e in events.Scalars(tag)], tag


@pytest.fixture(scope='module')
def straight_run(tiny_gguf, tmp_path_factory):
  """An uninterrupted 2-round run to compare resumed runs with."""
  config = config_for(tiny_gguf, tmp_path_factory.mktemp('straight'))
  experiment.run(config)
  return round_metrics(config.run_dir)


@pytest.mark.slow
def test_resume_with_v2_and_fidelity_after_sigkill(tiny_gguf, tmp_path):
  """The V2 filter and the fidelity scorer replay exactly after a kill mid-training."""
  overrides = dict(filter='reproducibility', scorer='fidelity', fidelity_layer=1)
  straight = config_for(tiny_gguf, tmp_path / 'straight', **overrides)
  experiment.run(straight)
  broken = config_for(tiny_gguf, tmp_path / 'broken', **overrides)
  first_round_batches = int(np.ceil(
      round_metrics(straight.run_dir)[0]['metrics']['train/num_examples'] / 4))
  killed = run_driver(flag_list(broken), crash=('train', str(first_round_batches + 1)))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  resumed = run_driver(flag_list(broken) + ['--resume'])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert round_metrics(broken.run_dir) == round_metrics(straight.run_dir)


@pytest.mark.parametrize('phase', ['generate', 'train'])
@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tiny_gguf, tmp_path, phase, straight_run):
  """Killed mid-round-2 (SIGKILL), then --resume: same per-round metrics, bit for bit.

  Every random choice derives from (seed, round, purpose) and round 1's adapters come
  back exactly from Orbax, so the redone round 2 replays the same computation.
  """
  broken = config_for(tiny_gguf, tmp_path / 'broken')
  # Round 1 makes 6 generate calls (3 BEFORE, 3 AFTER), so call 8 is round 2's BEFORE
  # inversion. Each round trains 2 batches (6 examples, batch 4), so the 4th batch built
  # is round 2's second: the kill lands mid-epoch.
  n = 8 if phase == 'generate' else 4
  killed = run_driver(flag_list(broken), crash=(phase, str(n)))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert RoundCheckpointer(broken.run_dir, broken.as_dict()).all_rounds() == [1]
  resumed = run_driver(flag_list(broken) + ['--resume'])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert round_metrics(broken.run_dir) == straight_run


@pytest.mark.parametrize('parallel', ['mesh', 'pmap'])
@pytest.mark.slow
def test_resume_on_four_devices(tiny_gguf, tmp_path, straight_run, parallel):
  """--parallel=mesh|pmap on 4 devices: killed mid-training and resumed equals its own
  uninterrupted run bit for bit, and the 1-device run to float32 rounding."""
  devices = dict(parallel=parallel, num_devices=4)
  straight = config_for(tiny_gguf, tmp_path / 'straight', **devices)
  experiment.run(straight)
  broken = config_for(tiny_gguf, tmp_path / 'broken', **devices)
  killed = run_driver(flag_list(broken), crash=('train', '4'))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  resumed = run_driver(flag_list(broken) + ['--resume'])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert round_metrics(broken.run_dir) == round_metrics(straight.run_dir)
  for got, expected in zip(round_metrics(straight.run_dir), straight_run):
    for key, value in expected['metrics'].items():
      assert got['metrics'][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize('parallel', [dict(), dict(parallel='mesh', num_devices=4)])
@pytest.mark.slow
def test_a_round_runs_no_process(tiny_gguf, tmp_path, no_process, parallel):
  """Generated commands are text: nothing may start a process during a whole round."""
  del no_process  # Patches os.system, os.exec*, os.spawn*, fork, subprocess.Popen, pty.spawn.
  # Validator, NLC2CMD, held-out evaluation, V2 embeddings, fidelity scoring and report
  # included (tests/test_validate_measures.py covers the measure check the same way).
  config = config_for(tiny_gguf, tmp_path, cycles=1, eval_every=1, eval_tasks=9,
                      filter='reproducibility', scorer='fidelity', fidelity_layer=1, **parallel)
  result = experiment.run(config)
  assert result.rounds[0]['metrics']['before/num_candidates'] == 6
  assert result.rounds[0]['metrics']['heldout/num_graded'] == 9
  assert -1.0 <= result.rounds[0]['metrics']['heldout/nlc2cmd'] <= 1.0
  assert (config.run_dir / 'report.md').exists() and (config.run_dir / 'goodhart.png').exists()


@pytest.mark.parametrize('overrides', [dict(filter='reproducibility', repro_m=2),
                                       dict(scorer='fidelity', fidelity_layer=1)])
@pytest.mark.slow
def test_v2_filter_and_fidelity_scorer_rounds(tiny_gguf, tmp_path, overrides):
  config = config_for(tiny_gguf, tmp_path, cycles=1, **overrides)
  record = experiment.run(config).rounds[0]
  metrics = record['metrics']
  assert metrics['before/passed_threshold'] == 6  # threshold 0: all pass ...
  if overrides.get('filter') == 'reproducibility':
    removed = metrics['before/removed_by_reproducibility']
    assert metrics['before/num_accepted'] == 6 - removed  # ... and V2 removes some or none.
    assert 'embed' in record['timings']
  else:
    assert 'fidelity' in record['timings'] and 'invert' not in record['timings']
    rows = files.read_rows(files.rows_path(config.run_dir, 1, 'before'))
    assert all(0.0 <= r['score'] <= 1.0 for r in rows)


@pytest.mark.slow
def test_kl_from_base_prefills_one_probe_a_round_and_the_base_once(tiny_gguf, tmp_path,
                                                                     monkeypatch):
  """The same prompts every round (a round's number of tasks); the base model's side once; the
  recorded KL is the trained weights' against it."""
  from inversion_jax.goodhart import early_warning
  from inversion_jax.loop import rounds
  exp = experiment.build(config_for(tiny_gguf, tmp_path))
  calls, original = [], generation.Generator.last_token_logits

  def counted(self, prompts):
    calls.append((self is exp.generator, list(prompts)))
    return original(self, prompts)

  monkeypatch.setattr(generation.Generator, 'last_token_logits', counted)
  first = rounds.run_round(exp, exp.initial_lora, 1)
  second = rounds.run_round(exp, first.lora, 2)
  assert [is_base for is_base, _ in calls] == [True, False, False]
  assert len(calls[0][1]) == min(exp.config.tasks, early_warning.KL_PROBES) == 3
  assert calls[0][1] == calls[1][1] == calls[2][1]
  trained = exp.generator.with_state(exp.inference_state(second.lora))
  expected = early_warning.kl_from_base(
      early_warning.next_token_log_probs(trained, calls[0][1]),
      early_warning.next_token_log_probs(exp.generator, calls[0][1]))
  assert second.record['metrics']['signal/kl_from_base'] == pytest.approx(expected, rel=1e-5)
  assert expected > 0.0


@pytest.mark.parametrize('action', ['stop', 'rollback'])
@pytest.mark.slow
def test_goodhart_stop_and_rollback(tiny_gguf, tmp_path, monkeypatch, capsys, action):
  """An alarm in round 1: stop ends the run there; rollback starts round 2 from the base."""
  from inversion_jax.goodhart import monitor
  monkeypatch.setattr(monitor.GoodhartMonitor, 'check',
                      lambda self, rounds: monitor.Alarm(rounds[-1]['cycle'], ['forced'], 0, 1.0)
                      if rounds[-1]['cycle'] == 1 else None)
  config = config_for(tiny_gguf, tmp_path, eval_every=1, eval_tasks=9, on_goodhart=action)
  result = experiment.run(config)
  first = result.rounds[0]
  assert first['goodhart']['action'] == action
  printed = capsys.readouterr().out
  if action == 'stop':
    assert len(result.rounds) == 1 and 'stopping after round 1' in printed
    assert RoundCheckpointer(config.run_dir, config.as_dict()).all_rounds() == [1]
  else:
    assert first['goodhart']['rollback_to'] == 0 and len(result.rounds) == 2
    assert 'round 2 starts from the adapters of the base model' in printed
    # Round 2 BEFORE ran on the base model: its commands equal a fresh run's round 1 BEFORE
    # only in distribution, but its held-out greedy commands equal the base model's.
    base_rows = files.read_rows(files.rows_path(config.run_dir, 0, 'heldout'))
    report = (config.run_dir / 'report.md').read_text()
    assert 'Round 1** (rollback)' in report and base_rows


@pytest.mark.slow
def test_heldout_evaluation_in_the_loop_and_offline(tiny_gguf, tmp_path):
  config = config_for(tiny_gguf, tmp_path, eval_every=2, eval_tasks=9)
  result = experiment.run(config)
  first, second = result.rounds
  assert first['metrics']['base/num_graded'] == 9  # The base model, before round 1.
  assert 'heldout/quality' not in first['metrics']  # --eval_every=2 skips round 1 ...
  assert second['metrics']['heldout/num_graded'] == 9  # ... and evaluates the last round.
  assert 'heldout' in second['timings']
  rows = files.read_rows(files.rows_path(config.run_dir, 0, 'heldout'))
  assert len(rows) == 9 and {'id', 'task', 'command', 'verdict'} <= set(rows[0])
  offline = subprocess.run(
      [sys.executable, str(ROOT / 'experiments' / 'evaluate_quality.py'),
       f'--workdir={config.run_dir}'], capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert offline.returncode == 0, offline.stderr[-2000:]
  assert 'round 1: graded' in offline.stdout and 'round 2' not in offline.stdout
  assert (config.run_dir / 'quality' / 'round_001.json').exists()
  again = subprocess.run(
      [sys.executable, str(ROOT / 'experiments' / 'evaluate_quality.py'),
       f'--workdir={config.run_dir}'], capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert 'already evaluated' in again.stdout
  empty = tmp_path / 'empty'
  empty.mkdir()
  for script, args in (('evaluate_quality.py', [f'--workdir={empty}']),
                       ('report.py', [f'--workdir={empty}'])):
    bad = subprocess.run([sys.executable, str(ROOT / 'experiments' / script), *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr, bad.stderr[-1500:]
    assert bad.stderr.strip().splitlines()[-1].startswith('error: ')
  assert '| 1 |' in (config.run_dir / 'report.md').read_text()


@pytest.mark.slow
def test_scoring_on_four_devices_equals_one(tiny_gguf):
  model_config, flat, tokenizer = registry.load_model_source(tiny_gguf)
  from inversion_jax.decode import prompts
  from inversion_jax.nn import model as model_lib
  graphdef, state = model_lib.from_flat_params(model_config, flat)
  greedy = inversion.ScorerConfig(
      judge='expected', generation=SamplingConfig(0.0, 8), reconstruction=SamplingConfig(0.0, 8))
  tasks = bank_lib.sample_tasks(bank_lib.default_bank(), 4, seed=0)
  results = []
  for kind, devices in (('pmap', 1), ('pmap', 4), ('mesh', 4)):
    gen = generation.Generator(graphdef, state, tokenizer, max_batch=8, show_progress=False,
                               backend=parallel.make_backend(kind, devices))
    results.append(inversion.score_tasks(gen, prompts.get_style('fewshot'), tasks, 2, greedy, 0))
  one = results[0]
  for other in results[1:]:
    assert [r.command for r in one.rows] == [r.command for r in other.rows]
    assert [r.reconstruction for r in one.rows] == [r.reconstruction for r in other.rows]
    np.testing.assert_allclose(one.scores, other.scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('overrides,message', [
    (dict(threshold=1.5), 'threshold'), (dict(cycles=0), 'cycles'), (dict(tasks=-1), 'tasks'),
    (dict(candidates=0), 'candidates'), (dict(judge='vibes'), 'judge'),
    (dict(prompt_style='poetry'), 'prompt style'), (dict(eval_every=1, eval_split='nope'), 'held-out split'),
    (dict(eval_every=-1), 'eval_every'), (dict(filter='reproducibility', repro_m=0), 'repro_m'),
    (dict(filter='reproducibility', repro_similarity=1.5), 'repro_similarity'),
    (dict(filter='reproducibility', repro_weights=(0.5, 0.6)), 'repro_weights'),
    (dict(repro_layer=99), 'repro_layer'), (dict(fidelity_k=0), 'fidelity_k'),
    (dict(top_k=0), 'top_k'), (dict(top_p=0.0), 'top_p'), (dict(max_grad_norm=0.0), 'max_grad_norm'),
    (dict(task_bank='bogus'), 'task bank'), (dict(preset='bogus'), 'preset'),
    (dict(lora_init='xavier'), 'lora_init'), (dict(command_cleaning='tidy'), 'command_cleaning'),
    (dict(lr=float('nan')), 'finite'), (dict(temperature=float('inf')), 'finite'),
    (dict(name='../../etc'), 'plain name'), (dict(name='a/b'), 'plain name'),
    (dict(quantize='int4'), 'quantize'), (dict(goodhart_tolerance=0.0), 'goodhart_tolerance'),
    (dict(parallel='ring'), 'unknown --parallel'), (dict(shard_params=True), 'needs --parallel=mesh'),
    (dict(parallel='mesh', num_devices=4, shard_params=True), 'num_heads=6 is not divisible'),
    (dict(parallel='mesh', num_devices=4, model_axis=2), 'needs --shard_params'),
])
def test_bad_settings_are_user_errors(tiny_gguf, tmp_path, overrides, message):
  with pytest.raises(UserError, match=message):
    experiment.run(config_for(tiny_gguf, tmp_path, **overrides))
  assert not (tmp_path / 'run').exists()  # Nothing half-made is left behind.


@pytest.mark.slow
def test_unwritable_output_and_existing_run(tiny_gguf, tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')
  with pytest.raises(UserError, match='--output'):
    experiment.run(config_for(tiny_gguf, blocker, cycles=1))
  config = config_for(tiny_gguf, tmp_path, cycles=1)
  experiment.run(config)
  with pytest.raises(UserError, match='--resume'):
    experiment.run(config)


@pytest.mark.slow
def test_cli_errors_are_one_line(tiny_gguf, tmp_path):
  config = config_for(tiny_gguf, tmp_path, cycles=1)
  assert run_driver(flag_list(config)).returncode == 0
  cases = [
      flag_list(config) + ['--resume', '--lr=0.001', '--tasks=4'],  # different configuration
      flag_list(config) + ['--threshold=2'],
      ['--model=no-such-model', f'--output={tmp_path}', '--name=x'],
      flag_list(config) + ['--num_processes=2', '--process_id=0'],  # no coordinator
      flag_list(config) + ['--coordinator_address=127.0.0.1:1', '--num_processes=2',
                           '--process_id=5'],
  ]
  for args in cases:
    result = run_driver(args)
    assert result.returncode == 2, result.stderr[-1500:]
    assert 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'lr 0.0002 -> 0.001' in run_driver(cases[0]).stderr
  assert 'needs --coordinator_address' in run_driver(cases[3]).stderr
  assert '--process_id=5 is out of range' in run_driver(cases[4]).stderr


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_user_error(tiny_gguf, tmp_path):
  config = config_for(tiny_gguf, tmp_path, cycles=1)
  experiment.run(config)
  for data in (config.run_dir / 'checkpoints' / '1').rglob('*'):
    if data.is_file() and data.parent.name == 'd':
      data.write_bytes(b'garbage')
  with pytest.raises(UserError, match='corrupt'):
    experiment.run(config_for(tiny_gguf, tmp_path, cycles=2), resume=True)


@pytest.mark.slow
def test_nan_loss_stops_the_round_and_keeps_earlier_rounds(tiny_gguf, tmp_path, monkeypatch):
  config = config_for(tiny_gguf, tmp_path)
  original = training.Trainer.run
  calls = [0]

  def nan_in_round_two(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 2:
      raise training.NonFiniteLoss('loss became nan at step 1')
    return original(self, *args, **kwargs)

  monkeypatch.setattr(training.Trainer, 'run', nan_in_round_two)
  with pytest.raises(UserError, match='round 2.*nan.*--resume'):
    experiment.run(config)
  assert RoundCheckpointer(config.run_dir, config.as_dict()).all_rounds() == [1]
  assert len(round_metrics(config.run_dir)) == 1
