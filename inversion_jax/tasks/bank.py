"""Task bank: tools, task templates and slot-value pools, and seeded task sampling.

The bank is data, not code: each JSON file is one domain (see `data/security_tools.json`
and `loader.py` for the schema), so a new tool or task family is a new file passed to
`TaskBank.from_files`, with no change to the loop.

Slot values are split into `train` and `heldout` with disjoint values per slot, so a
held-out quality evaluation never sees a value the loop trained on.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import importlib.resources
import pathlib

import numpy as np

from inversion_jax.errors import UserError

SPLITS = ('train', 'heldout')


@dataclasses.dataclass(frozen=True)
class SlotPool:
  """Values for one or more slots that are drawn together (software with its version).

  Attributes:
    name: the pool's key in its JSON file.
    slots: the slots one entry fills.
    values: split name -> entries; each entry maps every slot in `slots` to a value.
  """

  name: str
  slots: tuple[str, ...]
  values: Mapping[str, tuple[Mapping[str, str], ...]]


@dataclasses.dataclass(frozen=True)
class TaskTemplate:
  """One phrasing of one intent; `expected_options` may use slots, e.g. `-T{timing}`."""

  tool: str
  intent: str
  text: str
  slots: tuple[str, ...]
  expected_options: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Tool:
  """A command-line tool with its templates and the pools that fill their slots."""

  name: str
  binaries: tuple[str, ...]  # Accepted program names, e.g. nc, ncat, netcat.
  templates: tuple[TaskTemplate, ...]
  pools: Mapping[str, SlotPool]  # Slot name -> the pool that provides it.

  @property
  def intents(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.intent for t in self.templates))


@dataclasses.dataclass(frozen=True)
class Task:
  """A concrete task: template filled with values from one split."""

  tool: str
  intent: str
  text: str
  slots: dict[str, str]
  expected_options: tuple[str, ...]  # Options (or subcommands) the command should use.
  split: str


@dataclasses.dataclass(frozen=True)
class TaskBank:
  """All tools of one or more domain files."""

  tools: tuple[Tool, ...]

  def __post_init__(self):
    names = [tool.name for tool in self.tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
      raise UserError(
          f'tool(s) {", ".join(duplicates)} defined more than once across task files; '
          'give each tool one home file')
    if not self.tools:
      raise UserError('the task bank has no tools; pass at least one task file with tools')

  @classmethod
  def from_json(cls, path: str | pathlib.Path) -> 'TaskBank':
    """Loads one domain file, validating it (errors name the file and entry)."""
    return cls.from_files([path])

  @classmethod
  def from_files(cls, paths: Sequence[str | pathlib.Path]) -> 'TaskBank':
    """Loads and merges several domain files; tool names must be unique across them."""
    from inversion_jax.tasks import loader  # Local: loader builds this module's types.

    tools = []
    for path in paths:
      tools.extend(loader.load_tools(pathlib.Path(path)))
    return cls(tuple(tools))

  @property
  def tool_names(self) -> tuple[str, ...]:
    return tuple(tool.name for tool in self.tools)

  def tool(self, name: str) -> Tool:
    for tool in self.tools:
      if tool.name == name:
        return tool
    raise UserError(f'unknown tool {name!r}; the bank has {", ".join(self.tool_names)}')

  def slot_values(self, split: str) -> dict[str, set[str]]:
    """Slot name -> every value the split can put in that slot (for leakage checks)."""
    _check_split(split)
    values: dict[str, set[str]] = {}
    for tool in self.tools:
      for slot, pool in tool.pools.items():
        values.setdefault(slot, set()).update(e[slot] for e in pool.values[split])
    return values


def default_bank_path() -> pathlib.Path:
  return pathlib.Path(
      str(importlib.resources.files('inversion_jax.tasks') / 'data' / 'security_tools.json'))


def default_bank(extra_files: Sequence[str | pathlib.Path] = ()) -> TaskBank:
  """The nine security tools of the original, plus any extra domain files."""
  return TaskBank.from_files([default_bank_path(), *extra_files])


def sample_tasks(bank: TaskBank, n: int, seed: int, split: str = 'train') -> list[Task]:
  """Samples `n` tasks, reproducibly for a given seed.

  Tools are visited round-robin in a seeded random order (so every tool appears
  n // len(tools) or one more times); within a tool an intent, then a phrasing, then
  slot values are drawn uniformly. Drawing the intent first keeps tools with many
  phrasings of one intent from skewing the mix.
  """
  _check_split(split)
  if n < 0:
    raise UserError(f'number of tasks must be >= 0, got {n}')
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(bank.tools))
  return [_sample_task(bank.tools[order[i % len(order)]], rng, split) for i in range(n)]


def _sample_task(tool: Tool, rng: np.random.Generator, split: str) -> Task:
  intent = tool.intents[rng.integers(len(tool.intents))]
  phrasings = [t for t in tool.templates if t.intent == intent]
  template = phrasings[rng.integers(len(phrasings))]
  slots: dict[str, str] = {}
  for slot in template.slots:
    if slot not in slots:
      entries = tool.pools[slot].values[split]
      entry = entries[rng.integers(len(entries))]
      # One draw fills every slot of a joint pool that the template uses.
      slots.update({s: v for s, v in entry.items() if s in template.slots})
  return Task(
      tool=tool.name,
      intent=intent,
      text=template.text.format(**slots),
      slots=slots,
      expected_options=tuple(o.format(**slots) for o in template.expected_options),
      split=split,
  )


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise UserError(f'unknown task split {split!r}; use one of {", ".join(SPLITS)}')
