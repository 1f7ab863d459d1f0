"""Reads and validates one task-domain JSON file into `Tool`s.

Schema (see `data/security_tools.json`):

  {
    "name": "my_domain",                      # optional, for humans
    "description": "...",                     # optional, for humans
    "pools": {
      "host": {"train": ["10.0.0.1", ...], "heldout": ["172.20.5.9", ...]},
      "software_version": {                   # a joint pool: one draw fills both slots
        "train": [{"software": "vsftpd", "version": "2.3.4"}, ...],
        "heldout": [...]}
    },
    "tools": [
      {"name": "nmap", "binaries": ["nmap"],
       "intents": [
         {"intent": "timing", "expected_options": ["-T{timing}"],
          "templates": ["Scan {host} with timing template {timing}", ...]}]}
    ]
  }

A string pool fills the slot named like the pool; an object pool fills the slots named by
its keys. Every mistake raises `UserError` naming the file and the entry, because these
files are written by users adding domains.
"""

import json
import pathlib
import string
from typing import Any

from inversion_jax.errors import UserError
from inversion_jax.tasks import bank

_FORMATTER = string.Formatter()


def load_file(path: pathlib.Path) -> tuple[list[bank.Tool], str]:
  """(tools, sampling) of one task file; "sampling" defaults to round_robin."""
  raw = _read_json(path)
  where = str(path)
  _expect(isinstance(raw, dict), where, 'top level must be a JSON object')
  sampling = raw.get('sampling', 'round_robin')
  _expect(sampling in bank.SAMPLINGS, where,
          f'"sampling" must be one of {", ".join(bank.SAMPLINGS)}, got {sampling!r}')
  pools = _parse_pools(raw.get('pools'), where)
  tools = raw.get('tools')
  _expect(isinstance(tools, list) and tools, where, '"tools" must be a non-empty list')
  return [_parse_tool(t, pools, f'{where}: tools[{i}]') for i, t in enumerate(tools)], sampling


def _read_json(path: pathlib.Path) -> Any:
  try:
    text = path.read_text(encoding='utf-8')
  except OSError as error:
    raise UserError(f'cannot read task file {path}: {error.strerror}; check the path') from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as error:
    raise UserError(
        f'task file {path} is not valid JSON (line {error.lineno}: {error.msg}); fix it'
    ) from None


def _expect(condition: bool, where: str, message: str) -> None:
  if not condition:
    raise UserError(f'{where}: {message}')


def _parse_pools(raw: Any, where: str) -> dict[str, bank.SlotPool]:
  """Returns slot name -> pool, checking no slot is provided by two pools."""
  _expect(isinstance(raw, dict) and raw, where, '"pools" must be a non-empty object')
  by_slot: dict[str, bank.SlotPool] = {}
  plain = {name: spec for name, spec in raw.items() if not _is_sampled(spec)}
  sampled = {name: spec for name, spec in raw.items() if _is_sampled(spec)}
  parsed = {name: _parse_pool(name, spec, f'{where}: pool "{name}"')
            for name, spec in plain.items()}
  parsed |= {name: _parse_sampled_pool(name, spec, parsed, f'{where}: pool "{name}"')
             for name, spec in sampled.items()}
  for name, pool in parsed.items():
    for slot in pool.slots:
      _expect(slot not in by_slot, where,
              f'slot "{slot}" is filled by pools "{by_slot.get(slot, pool).name}" and '
              f'"{name}"; keep one')
      by_slot[slot] = pool
  return by_slot


def _is_sampled(spec: Any) -> bool:
  return isinstance(spec, dict) and 'sample_of' in spec


def _parse_sampled_pool(name: str, spec: dict, pools: dict[str, bank.SlotPool],
                        where: str) -> bank.SlotPool:
  """{"sample_of": "port", "count": [2, 4], "separator": ","}: distinct values joined."""
  _expect(set(spec) == {'sample_of', 'count', 'separator'}, where,
          'a sampled pool has exactly the keys sample_of, count and separator')
  source = pools.get(spec['sample_of'])
  _expect(source is not None and len(source.slots) == 1, where,
          f'"sample_of" must name a plain one-slot pool of this file, got {spec["sample_of"]!r}')
  count = spec['count']
  _expect(isinstance(count, list) and len(count) == 2 and all(isinstance(c, int) for c in count)
          and 1 <= count[0] <= count[1], where, '"count" must be [min, max] with 1 <= min <= max')
  _expect(isinstance(spec['separator'], str), where, '"separator" must be a string')
  return bank.SlotPool(name=name, slots=(name,), values={},
                       sample=(source, (count[0], count[1]), spec['separator']))


def _parse_pool(name: str, spec: Any, where: str) -> bank.SlotPool:
  _expect(isinstance(spec, dict) and set(spec) == set(bank.SPLITS), where,
          f'must be an object with exactly the keys {" and ".join(bank.SPLITS)}')
  values = {split: _parse_entries(name, spec[split], f'{where}, {split}')
            for split in bank.SPLITS}
  slots = tuple(values['train'][0])
  for split, entries in values.items():
    for entry in entries:
      _expect(tuple(entry) == slots, f'{where}, {split}',
              f'every entry must fill the slots {", ".join(slots)} (got {", ".join(entry)})')
  for slot in slots:
    shared = {e[slot] for e in values['train']} & {e[slot] for e in values['heldout']}
    _expect(not shared, where,
            f'slot "{slot}" has values in both train and heldout ({", ".join(sorted(shared))}); '
            'the splits must be disjoint')
  return bank.SlotPool(name=name, slots=slots, values=values)


def _parse_entries(name: str, raw: Any, where: str) -> tuple[dict[str, str], ...]:
  """Normalizes entries to dicts: a plain string fills the slot named like the pool."""
  _expect(isinstance(raw, list) and raw, where, 'must be a non-empty list of values')
  entries = []
  for value in raw:
    entry = {name: value} if isinstance(value, str) else value
    _expect(isinstance(entry, dict) and entry, where,
            f'entry {value!r} must be a string or an object of strings')
    for slot, text in entry.items():
      _expect(slot.isidentifier(), where, f'slot name {slot!r} must be an identifier')
      _expect(isinstance(text, str) and text.strip() == text and text, where,
              f'value {text!r} of slot "{slot}" must be a non-empty string without '
              'surrounding spaces')
    entries.append(dict(sorted(entry.items())))
  _expect(len({tuple(e.items()) for e in entries}) == len(entries), where,
          'has duplicate entries; remove them')
  return tuple(entries)


def _parse_tool(raw: Any, pools: dict[str, bank.SlotPool], where: str) -> bank.Tool:
  _expect(isinstance(raw, dict), where, 'must be an object')
  name = raw.get('name')
  _expect(isinstance(name, str) and name.strip(), where, '"name" must be a non-empty string')
  where = f'{where} ("{name}")'
  binaries = raw.get('binaries', [name])
  _expect(_is_string_list(binaries) and binaries, where,
          '"binaries" must be a non-empty list of program names')
  intents = raw.get('intents')
  _expect(isinstance(intents, list) and intents, where, '"intents" must be a non-empty list')
  templates = []
  for i, intent in enumerate(intents):
    templates.extend(_parse_intent(intent, name, pools, f'{where}, intents[{i}]'))
  used = {slot for t in templates for slot in t.slots}
  return bank.Tool(name=name, binaries=tuple(binaries), templates=tuple(templates),
                   pools={slot: pools[slot] for slot in sorted(used)})


def _parse_intent(raw: Any, tool: str, pools: dict[str, bank.SlotPool],
                  where: str) -> list[bank.TaskTemplate]:
  _expect(isinstance(raw, dict), where, 'must be an object')
  intent = raw.get('intent')
  _expect(isinstance(intent, str) and intent.strip(), where,
          '"intent" must be a non-empty string')
  where = f'{where} ("{intent}")'
  options = raw.get('expected_options', [])
  _expect(_is_string_list(options), where, '"expected_options" must be a list of strings')
  texts = raw.get('templates')
  _expect(_is_string_list(texts) and texts, where,
          '"templates" must be a non-empty list of strings')
  templates = []
  for text in texts:
    slots = _template_slots(text, pools, f'{where}, template {text!r}')
    for option in options:
      extra = set(_template_slots(option, pools, f'{where}, option {option!r}')) - set(slots)
      _expect(not extra, f'{where}, template {text!r}',
              f'expected option {option!r} uses slot(s) {", ".join(sorted(extra))} that the '
              'template does not; add them to the template or split the intent')
    templates.append(bank.TaskTemplate(tool=tool, intent=intent, text=text, slots=slots,
                                       expected_options=tuple(options)))
  return templates


def _template_slots(text: str, pools: dict[str, bank.SlotPool], where: str) -> tuple[str, ...]:
  """Returns the slots `text` uses, in order, rejecting unknown or formatted fields."""
  try:
    fields = [(f, spec, conv) for _, f, spec, conv in _FORMATTER.parse(text) if f is not None]
  except ValueError as error:
    raise UserError(
        f'{where}: bad braces ({error}); write {{{{ and }}}} for literal braces') from None
  slots = []
  for field, spec, conversion in fields:
    _expect(field.isidentifier() and not spec and not conversion, where,
            f'placeholder {{{field}}} must be a plain slot name like {{host}}')
    _expect(field in pools, where,
            f'unknown slot {{{field}}}; use one of {", ".join(sorted(pools))} or add a pool')
    if field not in slots:
      slots.append(field)
  return tuple(slots)


def _is_string_list(value: Any) -> bool:
  return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)
