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
# How `sample_tasks` picks tools and templates (a bank file's "sampling" key):
#   round_robin: tools in turn, then an intent, then a phrasing (ours, the default);
#   tool_then_template: a tool uniformly, then one of its templates uniformly (the original).
SAMPLINGS = ('round_robin', 'tool_then_template')


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
  # A sampled pool (the original's {ports}): `count` distinct values of another pool's
  # split, joined; `values` is then empty. (source pool, (min, max), separator).
  sample: 'tuple[SlotPool, tuple[int, int], str] | None' = None

  def draw(self, rng: np.random.Generator, split: str) -> Mapping[str, str]:
    """One entry of this pool for `split`."""
    if self.sample is None:
      entries = self.values[split]
      return entries[rng.integers(len(entries))]
    source, (low, high), separator = self.sample
    entries = source.values[split]
    count = min(int(rng.integers(low, high + 1)), len(entries))
    picked = rng.choice(len(entries), count, replace=False)
    return {self.slots[0]: separator.join(entries[i][source.slots[0]] for i in picked)}


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
  sampling: str = 'round_robin'

  def __post_init__(self):
    if self.sampling not in SAMPLINGS:
      raise UserError(f'unknown task sampling {self.sampling!r}; use one of {", ".join(SAMPLINGS)}')
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

    tools, samplings = [], set()
    for path in paths:
      file_tools, sampling = loader.load_file(pathlib.Path(path))
      tools.extend(file_tools)
      samplings.add(sampling)
    if len(samplings) > 1:
      raise UserError(f'the task files ask for different samplings ({", ".join(sorted(samplings))});'
                      ' merge only files with the same "sampling"')
    return cls(tuple(tools), samplings.pop() if samplings else 'round_robin')

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
      for slot, pool in tool.pools.items():  # A sampled pool's values are its source's.
        values.setdefault(slot, set()).update(e[slot] for e in pool.values.get(split, ()))
    return values


# --task_bank names: ours (73 templates in 22 intents, train/held-out pools) and the
# original's 35 templates with its pools and its sampling.
BANKS = {'default': 'security_tools.json', 'original': 'original_tools.json'}


def bank_path(name: str = 'default') -> pathlib.Path:
  if name not in BANKS:
    raise UserError(f'unknown task bank {name!r}; choose one of {", ".join(BANKS)}')
  return pathlib.Path(str(importlib.resources.files('inversion_jax.tasks') / 'data' / BANKS[name]))


def default_bank_path() -> pathlib.Path:
  return bank_path('default')


def default_bank(extra_files: Sequence[str | pathlib.Path] = ()) -> TaskBank:
  """The nine security tools of the original, plus any extra domain files."""
  return TaskBank.from_files([default_bank_path(), *extra_files])


def named_bank(name: str) -> TaskBank:
  """A bank by its --task_bank name."""
  return TaskBank.from_files([bank_path(name)])


def sample_tasks(bank: TaskBank, n: int, seed: int, split: str = 'train') -> list[Task]:
  """Samples `n` tasks, reproducibly for a given seed.

  With the bank's default 'round_robin' sampling, tools are visited round-robin in a
  seeded random order (so every tool appears n // len(tools) or one more times); within a
  tool an intent, then a phrasing, then slot values are drawn uniformly. Drawing the
  intent first keeps tools with many phrasings of one intent from skewing the mix. With
  'tool_then_template' (the original's), a tool and then one of its templates are drawn
  uniformly for every task.
  """
  _check_split(split)
  if n < 0:
    raise UserError(f'number of tasks must be >= 0, got {n}')
  rng = np.random.default_rng(seed)
  if bank.sampling == 'tool_then_template':
    tools = [bank.tools[rng.integers(len(bank.tools))] for _ in range(n)]
    return [_fill(tool, tool.templates[rng.integers(len(tool.templates))], rng, split)
            for tool in tools]
  order = rng.permutation(len(bank.tools))
  return [_sample_task(bank.tools[order[i % len(order)]], rng, split) for i in range(n)]


def _sample_task(tool: Tool, rng: np.random.Generator, split: str) -> Task:
  intent = tool.intents[rng.integers(len(tool.intents))]
  phrasings = [t for t in tool.templates if t.intent == intent]
  return _fill(tool, phrasings[rng.integers(len(phrasings))], rng, split)


def _fill(tool: Tool, template: TaskTemplate, rng: np.random.Generator, split: str) -> Task:
  intent = template.intent
  slots: dict[str, str] = {}
  for slot in template.slots:
    if slot not in slots:
      entry = tool.pools[slot].draw(rng, split)
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
