"""Run directories that cannot lose data: one writer, an interruption at any write point
followed by --resume ends as an uninterrupted run, a full disk, corrupt files, bad values.

The write points share one uninterrupted run: it copies its directory before and after
every write (a rows file, a checkpoint commit, progress, results, report, plot), which is
what a kill -9 at that moment leaves on disk, plus the temp file of an interrupted write.
Each copy is then resumed in-process and must end equal to the uninterrupted run.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from inversion_jax import errors
from inversion_jax.errors import UserError
from inversion_jax.loop import experiment, rounds
from inversion_jax.records import files
from inversion_jax.records import history, report
from inversion_jax.records import run_dir as run_dir_lib
from inversion_jax.train import checkpointing
from tests.tiny_run import DRIVER, ROOT, config_for, flag_list, round_metrics, run_driver


def _summary(run_dir):
  """The results file's summary without wall-clock seconds."""
  results = json.loads((pathlib.Path(run_dir) / history.RESULTS_FILE).read_text())
  return {k: v for k, v in results['summary'].items() if k != 'total_seconds'}


def _label(run, path) -> str:
  path = pathlib.Path(path)
  return str(path.relative_to(run)) if path.is_relative_to(run) else path.name


@pytest.fixture(scope='module')
def write_points(tiny_gguf, tmp_path_factory):  # noqa: F811
  """(config, metrics, summary, [(label, copy of the run dir)]) of one uninterrupted run.

  A second process started on the same directory in round 1 must be refused (one writer)
  and leave this run unharmed (checked by the resumes, which start before it).
  """
  root = tmp_path_factory.mktemp('points')
  config = config_for(tiny_gguf, root / 'out')
  run = config.run_dir
  points, intruder = [], []

  def snapshot(label, partial=None):
    copy = root / f'point{len(points):02d}'
    shutil.copytree(run, copy / 'run')
    if partial is not None:  # What a kill inside the write leaves beside the old file.
      partial(copy / 'run')
    points.append((label, copy))

  def wrap_text(original):
    def write(path, text):
      name = pathlib.Path(path).name

      def leftover(copy):
        (copy / _label(run, path)).parent.mkdir(parents=True, exist_ok=True)
        (copy / _label(run, path)).with_name(f'.{name}.killed.tmp').write_text(text[:7])

      snapshot(f'before {_label(run, path)}', leftover)
      result = original(path, text)
      return result
    return write

  def wrap_save(original):
    def save(self, round_index, *args, **kwargs):
      def leftover(copy):
        (copy / 'checkpoints' / f'{round_index}.orbax-checkpoint-tmp-1').mkdir()

      snapshot(f'before checkpoint {round_index}', leftover)
      result = original(self, round_index, *args, **kwargs)
      if round_index == 1:
        intruder.append(subprocess.run(
            [sys.executable, str(DRIVER)] + flag_list(config) + ['--seed=1'],
            capture_output=True, text=True, cwd=ROOT, timeout=600))
      return result
    return save

  def wrap_plot(original):
    def plot(rounds_, path):
      snapshot('before goodhart.png')
      result = original(rounds_, path)
      snapshot('after goodhart.png')
      return result
    return plot

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(files, 'write_text_atomic', wrap_text(files.write_text_atomic))
    patch.setattr(checkpointing.RoundCheckpointer, 'save',
                  wrap_save(checkpointing.RoundCheckpointer.save))
    patch.setattr(report, 'plot', wrap_plot(report.plot))
    experiment.run(config)
  refused = intruder[0]
  assert refused.returncode == 2, refused.stderr[-1500:]
  assert 'Traceback' not in refused.stderr
  assert refused.stderr.strip().splitlines()[-1] == (
      f'error: {run} is in use by another process (pid {os.getpid()}); wait for it to finish, '
      'or give a run another --name or --output')
  return config, round_metrics(run), _summary(run), points


def _resume(tiny_gguf, copy, **overrides):  # noqa: F811
  config = config_for(tiny_gguf, copy, name='run', **overrides)
  experiment.run(config, resume=True)
  return config.run_dir


def _check_complete(run_dir, metrics, summary, label, cycles=2):
  assert round_metrics(run_dir) == metrics[:cycles], label
  if cycles == len(metrics):
    assert _summary(run_dir) == summary, label
  assert f'| {cycles} |' in (run_dir / report.REPORT_FILE).read_text(), label
  assert (run_dir / report.PLOT_FILE).stat().st_size > 0, label
  stored = json.loads((run_dir / checkpointing.RUN_CONFIG_FILE).read_text())
  assert stored['seed'] == 0, label
  assert not list(run_dir.rglob('*.tmp')) and not list(run_dir.rglob('*orbax-checkpoint-tmp*')), label


@pytest.mark.slow
def test_resume_after_a_kill_at_every_write_point_ends_as_uninterrupted(tiny_gguf,  # noqa: F811
                                                                        write_points, tmp_path):
  _, metrics, summary, points = write_points
  per_round = [[f'before rows/round_00{r}_before.jsonl', f'before rows/round_00{r}_after.jsonl',
                f'before checkpoint {r}', 'before progress.json'] for r in (1, 2)]
  labels = [label for label, _ in points]
  assert labels == (  # run_config.json comes before any work.
      ['before run_config.json'] + per_round[0] + per_round[1]
      + [f'before {history.RESULTS_FILE}', 'before report.md', 'before goodhart.png',
         'after goodhart.png'])
  for number, (label, point) in enumerate(points):
    copy = tmp_path / str(number)
    shutil.copytree(point, copy)  # The points stay as the kill left them, for other tests.
    # Before round 1 commits nothing is kept: resuming to round 1 shows the restart (round
    # 2 after a committed round 1 is what the later points show).
    cycles = 1 if number <= labels.index('before checkpoint 1') else 2
    _check_complete(_resume(tiny_gguf, copy, cycles=cycles), metrics, summary, label, cycles)


def _point(points, label, last=False):
  found = [copy for name, copy in points if name == label]
  return found[-1] if last else found[0]


@pytest.mark.slow
def test_resume_repairs_lost_and_corrupt_files(tiny_gguf, write_points, tmp_path):  # noqa: F811
  """After round 1's commit without run_config.json (the old gap), a complete run with
  corrupt progress.json and run_config.json: resume rewrites them from the checkpoints."""
  _, metrics, summary, points = write_points
  gap = tmp_path / 'gap'
  shutil.copytree(_point(points, 'before progress.json'), gap)
  (gap / 'run' / checkpointing.RUN_CONFIG_FILE).unlink()
  _check_complete(_resume(tiny_gguf, gap), metrics, summary, 'no run_config.json')
  done = tmp_path / 'done'
  shutil.copytree(_point(points, 'after goodhart.png'), done)
  (done / 'run' / history.PROGRESS_FILE).write_text('{"config": ')
  (done / 'run' / checkpointing.RUN_CONFIG_FILE).write_text('[1, 2]')
  _check_complete(_resume(tiny_gguf, done), metrics, summary, 'corrupt files')


def test_resume_semantics(tiny_gguf, write_points, tmp_path):  # noqa: F811
  """A typo'd name is an error; the held-out set cannot change; a moved run resumes."""
  _, metrics, summary, points = write_points
  finished = _point(points, 'after goodhart.png')
  with pytest.raises(UserError, match='there is no run .*typo.*check --output and --name'):
    experiment.run(config_for(tiny_gguf, finished, name='typo'), resume=True)
  assert not (finished / 'typo').exists()
  for change in (dict(eval_split='small'), dict(eval_tasks=4)):
    with pytest.raises(UserError, match=f'different configuration: {next(iter(change))} '):
      _resume(tiny_gguf, finished, **change)
  moved = tmp_path / 'elsewhere'
  shutil.copytree(finished / 'run', moved / 'renamed')
  config = config_for(tiny_gguf, moved, name='renamed')
  experiment.run(config, resume=True)
  _check_complete(config.run_dir, metrics, summary, 'renamed')

  class Started(Exception):
    pass

  def build(*args, **kwargs):
    raise Started

  with pytest.MonkeyPatch.context() as patch:  # resume_or_start (for scripts) goes on to build.
    patch.setattr(experiment, '_build_validated', build)
    with pytest.raises(Started):
      experiment.run(config_for(tiny_gguf, tmp_path / 'new'), resume=True, resume_or_start=True)


@pytest.mark.slow
def test_full_disk_is_one_line_and_keeps_the_earlier_round(tiny_gguf, write_points,  # noqa: F811
                                                          tmp_path, monkeypatch):
  """Orbax's RESOURCE_EXHAUSTED (a full disk) in round 2's save: round 1 stays loadable
  (a resume from there is what the write points show)."""
  _, metrics, _, points = write_points
  copy = tmp_path / 'full'
  shutil.copytree(_point(points, 'before rows/round_002_before.jsonl'), copy)
  original = checkpointing.ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    (pathlib.Path(self.directory) / f'{step}.orbax-checkpoint-tmp-9').mkdir()
    raise ValueError('RESOURCE_EXHAUSTED: Error writing "lora" in OCDBT database: Failed to '
                     'write 4139 bytes to file 17: No space left on device [os_error_code=28]')

  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, 'save', full_disk)
  with pytest.raises(errors.OutputError) as info:
    _resume(tiny_gguf, copy)
  message = str(info.value)
  assert message.startswith(f'cannot write {copy / "run" / "checkpoints" / "2"} (No space left')
  assert message.endswith(f'round 1 is saved in {copy / "run"}; continue with the same flags '
                          'and --resume')
  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, 'save', original)
  with checkpointing.RoundCheckpointer(copy / 'run', {}) as kept:  # Sweeps the half save.
    assert kept.all_rounds() == [1]
    assert kept.restore_meta(1)['record']['metrics'] == metrics[0]['metrics']
  assert not list((copy / 'run' / 'checkpoints').glob('*tmp*'))


def test_full_disk_in_a_json_write_names_the_file(tiny_gguf, tmp_path, monkeypatch):  # noqa: F811
  config = config_for(tiny_gguf, tmp_path, cycles=1)
  original = os.replace

  def no_space(src, dst):
    if str(dst).endswith(checkpointing.RUN_CONFIG_FILE):
      raise OSError(28, os.strerror(28))
    return original(src, dst)

  monkeypatch.setattr(os, 'replace', no_space)
  with pytest.raises(UserError, match=r'run_config.json \(No space left on device\); '
                     'the disk is full: free space$'):
    experiment.run(config)  # Before any work: nothing is lost.
  assert not list(config.run_dir.glob('.*.tmp'))


@pytest.mark.slow
def test_kill_9_between_the_last_commit_and_progress(tiny_gguf, write_points,  # noqa: F811
                                                    tmp_path):
  """A real SIGKILL right after the last round commits (a 1-round run, to keep it short):
  --resume writes progress, results and report from the checkpoint."""
  _, metrics, summary, _ = write_points
  config = config_for(tiny_gguf, tmp_path, cycles=1)
  killed = run_driver(flag_list(config), crash=('commit', '1'))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert not (config.run_dir / history.PROGRESS_FILE).exists()
  resumed = run_driver(flag_list(config) + ['--resume'])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert 'Traceback' not in resumed.stderr
  _check_complete(config.run_dir, metrics, summary, 'kill -9 after commit 1', cycles=1)


def test_ctrl_c_says_where_to_resume_and_closes(tiny_gguf, tmp_path, monkeypatch):  # noqa: F811
  closed, close = [], checkpointing.RoundCheckpointer.close

  def recorded_close(self):
    closed.append(self.directory)
    close(self)

  monkeypatch.setattr(checkpointing.RoundCheckpointer, 'close', recorded_close)

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(rounds, 'run_round', interrupted)
  config = config_for(tiny_gguf, tmp_path)
  with pytest.raises(errors.Interrupted, match='no round of .* was completed; continue with the '
                     'same flags and --resume'):
    experiment.run(config)
  assert closed == [config.run_dir]
  run_dir_lib.RunLock(config.run_dir).release()  # The lock went with the run.


def test_cli_wrapper_turns_ctrl_c_into_one_line(capsys):
  @errors.exit_on_user_error
  def main():
    raise errors.Interrupted('round 1 is saved in runs/x; continue with --resume')

  with pytest.raises(SystemExit) as info:
    main()
  assert info.value.code == errors.INTERRUPTED_EXIT
  assert capsys.readouterr().err == ('interrupted: round 1 is saved in runs/x; continue with '
                                     '--resume\n')


def test_lock_refuses_a_second_writer_and_goes_with_its_holder(tmp_path):
  run = tmp_path / 'run'
  with run_dir_lib.RunLock(run):
    with pytest.raises(UserError, match=rf'in use by another process \(pid {os.getpid()}\)'):
      run_dir_lib.RunLock(run)
    with pytest.raises(UserError, match='in use'):
      run_dir_lib.check_unlocked(run)
  run_dir_lib.check_unlocked(run)
  holder = subprocess.Popen(  # A holder that dies without releasing: the OS drops the lock.
      [sys.executable, '-c', 'import fcntl, os, sys; f = open(sys.argv[1], "w"); '
       'fcntl.flock(f, fcntl.LOCK_EX); f.write(str(os.getpid())); f.flush(); print(1, flush=True); '
       'sys.stdin.read()', str(run / run_dir_lib.LOCK_FILE)],
      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == '1'
  with pytest.raises(UserError, match=rf'pid {holder.pid}\)'):
    run_dir_lib.RunLock(run, 'the evaluation')
  holder.kill()
  holder.wait()
  run_dir_lib.RunLock(run).release()


@pytest.mark.parametrize('overrides, message', [
    (dict(seed=-1), r'--seed must be in \[0, 2\^31\)'), (dict(seed=2**64), r'--seed must be in'),
    (dict(seed='abc'), '--seed must be an integer'), (dict(cycles=2.5), '--cycles must be an int'),
    (dict(cycles=True), '--cycles must be an integer, got True'),
    (dict(tasks='3'), '--tasks must be an integer'), (dict(lora_alpha=0), '--lora_alpha must be'),
    (dict(lr=1e9), r'--lr=1000000000.0 is above 0.1'), (dict(temperature=float('nan')), 'finite'),
    (dict(top_k=2.5), r'--top_k must be an integer \(or unset\)'),
    (dict(weights=(0.5, 0.5)), '--weights must be 3 values'),
    (dict(completion_only=1), '--completion_only must be true or false'),
    (dict(threshold='0.5'), '--threshold must be a number'),
])
def test_values_are_checked_once_at_the_edge(tmp_path, overrides, message):
  config = experiment.RunConfig(output=str(tmp_path), **overrides)
  with pytest.raises(UserError, match=message):
    config.validate()
  with pytest.raises(UserError, match=message):
    experiment.run(config)  # Before the model loads or any directory is made.
  assert not (tmp_path / config.name).exists()


def test_tilde_in_output_is_the_home_directory():
  assert experiment.RunConfig(output='~/runs', name='x').run_dir == pathlib.Path.home() / 'runs/x'


def test_sampling_refuses_non_finite_temperatures():
  from inversion_jax.decode.sampling import SamplingConfig  # pylint: disable=import-outside-toplevel
  for bad in (float('nan'), float('inf'), -1.0):
    with pytest.raises(ValueError, match='finite number >= 0'):
      SamplingConfig(temperature=bad)


@pytest.mark.slow
def test_clis_check_outputs_and_inputs_before_the_work(tmp_path):
  """evaluate_quality --output in a missing directory, a wrong-typed run_config.json, and
  non-UTF-8 input to validate_commands: one line each, before any model loads
  (compare_runs' checks: test_compare_runs.py)."""
  workdir = tmp_path / 'run'
  (workdir / 'checkpoints' / '1').mkdir(parents=True)
  (workdir / checkpointing.RUN_CONFIG_FILE).write_text('{"cycles": "two", "seed": 0}')
  binary = tmp_path / 'in.jsonl'
  binary.write_bytes(b'{"tool": "ls", "task": "\xff\xfe"}\n')
  cases = [
      (['evaluate_quality.py', '--model=no-such-model', f'--output={tmp_path}/missing/x.json'],
       'missing does not exist'),
      (['evaluate_quality.py', f'--workdir={workdir}'], '--cycles must be an integer'),
      (['validate_commands.py', f'--input={binary}'], 'is not UTF-8 text'),
  ]
  for args, message in cases:
    result = subprocess.run([sys.executable, str(ROOT / 'experiments' / args[0]), *args[1:]],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, (args, result.stderr[-1500:])
    assert 'Traceback' not in result.stderr, args
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and message in last, (args, last)
