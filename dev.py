#!/usr/bin/env python3
"""Set-up-and-go for a fresh machine with only Python: `python3 dev.py run|test`.

Creates `.venv` when missing, installs the project (and its test extra) into it when
setup.cfg changed since the last install, then runs the main job or the test suite.
Standard library only: this file runs before anything is installed.
"""

import hashlib
import os
import pathlib
import subprocess
import sys
import venv

ROOT = pathlib.Path(__file__).resolve().parent
VENV = pathlib.Path(os.environ.get('INVERSION_JAX_VENV', ROOT / '.venv'))
PYTHON = VENV / 'bin' / 'python'

# What `python3 dev.py run` runs: the demo experiment, configs/demo.py (2 short V1 rounds on
# the embedded SmolLM2-135M, real quality graded on 18 held-out tasks, near 5 minutes on a
# CPU). Flags after `run` override it (`--cycles=3`, `--config.eval_tasks=0`). --resume_or_start:
# rerunning continues the run, or prints its results when it is complete.
MAIN_JOB = ['experiments/self_improve.py', '--config=configs/demo.py', '--resume_or_start']


def _install_stamp() -> pathlib.Path:
  digest = hashlib.sha256()
  for name in ('setup.cfg', 'pyproject.toml'):
    digest.update((ROOT / name).read_bytes())
  return VENV / f'.installed-{digest.hexdigest()[:16]}'


def ensure_environment() -> None:
  """Makes the virtualenv and installs into it, once per version of the install files."""
  if not PYTHON.exists():
    print(f'creating virtualenv {VENV}', flush=True)
    venv.create(VENV, with_pip=True)
  stamp = _install_stamp()
  if stamp.exists():
    return
  print('installing inversion_jax and its dependencies (first run only)...', flush=True)
  pip = [str(PYTHON), '-m', 'pip', 'install', '--disable-pip-version-check', '-q']
  subprocess.run(pip + ['--upgrade', 'pip'], check=True)
  subprocess.run(pip + ['-e', f'{ROOT}[test]'], check=True)
  for old in VENV.glob('.installed-*'):
    old.unlink()
  stamp.touch()


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] not in ('run', 'test'):
    print('usage: python3 dev.py run [flags...] | python3 dev.py test [pytest args...]',
          file=sys.stderr)
    return 2
  ensure_environment()
  os.chdir(ROOT)
  if argv[1] == 'run':
    command = [str(PYTHON), *MAIN_JOB, *argv[2:]]
  else:
    # Every core: the tests are mostly single-threaded XLA compiles (pytest-xdist).
    command = [str(PYTHON), '-m', 'pytest', '-q', '-n', 'auto', *argv[2:]]
  return subprocess.run(command).returncode


if __name__ == '__main__':
  sys.exit(main(sys.argv))
