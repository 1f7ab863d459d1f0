"""TFDS builder for the held-out evaluation set, generated from the committed `source.jsonl`.

The dataset is written as `array_record` files, so it is read with `tfds.data_source` (random
access, no TensorFlow needed). Nested fields (`values`, `intent_options`) are stored as JSON
text; `index` keeps the source order, which array_record shuffles by key.

Splits: `test` (every task) and `small` (the lines marked `"small": true`).
"""

import hashlib
import importlib.resources
import json
import pathlib

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from inversion_jax.errors import UserError

NAME = 'inversion_heldout'
SPLITS = ('test', 'small')
FIELDS = ('id', 'tool', 'intent', 'task', 'values', 'intent_options', 'references', 'compound',
          'small')


def source_path() -> pathlib.Path:
  """The committed source of truth, shipped as package data."""
  return pathlib.Path(str(importlib.resources.files('inversion_jax.quality.heldout') /
                          'source.jsonl'))


def source_sha256(path: pathlib.Path | None = None) -> str:
  return hashlib.sha256((path or source_path()).read_bytes()).hexdigest()


def read_source(path: pathlib.Path | None = None) -> list[dict]:
  """The records of source.jsonl, in file order (blank lines skipped)."""
  path = path or source_path()
  records = []
  for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
    if line.strip():
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise ValueError(f'{path}:{number}: not JSON: {error}') from None
      record = record if isinstance(record, dict) else {}
      references = record.get('references')
      if not references or not all(isinstance(c, str) and c.strip() for c in references):
        raise UserError(f'{path}:{number}: task {record.get("id", "?")} has no reference '
                        'command; every held-out task needs at least one (the NLC2CMD score '
                        'is measured against them)')
      records.append(record)
  return records


def check_references(records, path: pathlib.Path | None = None) -> None:
  """Refuses a reference command that its own task's validator does not pass strictly."""
  from inversion_jax.quality import validator  # pylint: disable=g-import-not-at-top
  for record in records:
    for command in record['references']:
      verdict = validator.validate(record['tool'], record['task'], command,
                                   intent_options=record['intent_options'],
                                   values=record['values'])
      if not verdict.ok:
        raise UserError(f'{path or source_path()}: task {record["id"]}: reference {command!r} '
                        f'fails its own validator ({", ".join(verdict.reasons)}); fix the '
                        'reference or the task')


def encode(record: dict, index: int) -> dict:
  """A source record as a TFDS example (nested values as JSON text)."""
  return {
      'index': index,
      'id': record['id'],
      'tool': record['tool'],
      'intent': record['intent'],
      'task': record['task'],
      'values': json.dumps(record['values'], ensure_ascii=False, sort_keys=True),
      'intent_options': json.dumps(record['intent_options'], ensure_ascii=False),
      'references': list(record['references']),
      'compound': bool(record['compound']),
      'small': bool(record.get('small', False)),
  }


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def decode(example: dict) -> dict:
  """A TFDS example (as `data_source` returns it) back as a plain source record."""
  return {
      'id': _text(example['id']),
      'tool': _text(example['tool']),
      'intent': _text(example['intent']),
      'task': _text(example['task']),
      'values': json.loads(_text(example['values'])),
      'intent_options': json.loads(_text(example['intent_options'])),
      'references': [_text(r) for r in example['references']],
      'compound': bool(example['compound']),
      'small': bool(example['small']),
  }


class InversionHeldout(tfds.core.GeneratorBasedBuilder):
  """Held-out security-tool tasks with reference commands and their intents' options."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release, built from inversion_jax/quality/heldout/source.jsonl.'}
  # TFDS derives this from the package via `importlib_resources` (a backport that etils no
  # longer installs on Python >= 3.10), only to look for a checksums file. Nothing here is
  # downloaded, so name the file directly.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'index': tfds.features.Scalar(dtype=np.int32),
            'id': tfds.features.Text(),
            'tool': tfds.features.Text(),
            'intent': tfds.features.Text(),
            'task': tfds.features.Text(),
            'values': tfds.features.Text(),  # JSON object: role -> value or list of values.
            'intent_options': tfds.features.Text(),  # JSON list of lists of option strings.
            'references': tfds.features.Sequence(tfds.features.Text()),
            'compound': tfds.features.Scalar(dtype=np.bool_),
            'small': tfds.features.Scalar(dtype=np.bool_),
        }),
        supervised_keys=None,
        homepage=None,
        metadata=tfds.core.MetadataDict(source_sha256=source_sha256()),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the source ships with the package.
    records = read_source()
    check_references(records)
    return {
        'test': self._generate_examples(records, lambda r: True),
        'small': self._generate_examples(records, lambda r: bool(r.get('small'))),
    }

  def _generate_examples(self, records, keep):
    for index, record in enumerate(records):
      if keep(record):
        yield record['id'], encode(record, index)
