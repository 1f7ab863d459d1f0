"""Which machine, software and commit produced a benchmark's numbers: one record for every
script that writes figures (a figure without it cannot be compared or recomputed)."""

import datetime
import os
import pathlib
import platform
import subprocess

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent


def git_commit(short: bool = False) -> str | None:
  """The checkout's HEAD, or None outside a git checkout."""
  command = ['git', 'rev-parse', *(['--short'] if short else []), 'HEAD']
  try:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def cpu_model() -> str | None:
  """The CPU's model name from /proc/cpuinfo (Linux; `platform.processor()` is often '')."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as file:
      for line in file:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return None


def host() -> str:
  """One line naming the host: CPU model and core count."""
  return f'{cpu_model() or platform.machine()}, {os.cpu_count()} cores'


def machine_info() -> dict:
  """Enough to tell later which machine and software produced the numbers."""
  devices = jax.devices()
  info = dict(date=datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
              python=platform.python_version(), platform=platform.platform(),
              processor=platform.processor(), cpu_model=cpu_model(),
              machine=platform.machine(), cpu_count=os.cpu_count(), git_commit=git_commit(),
              jax=jax.__version__, backend=jax.default_backend(),
              devices=[str(d) for d in devices], device_kind=devices[0].device_kind)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError:
    return info
  info.update(torch=torch.__version__, transformers=transformers.__version__,
              torch_threads=torch.get_num_threads(), torch_cuda=torch.cuda.is_available())
  if torch.cuda.is_available():
    info['torch_cuda_device'] = torch.cuda.get_device_name(0)
  return info
