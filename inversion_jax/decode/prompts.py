"""Prompt styles for the three model calls: generate, reconstruct (invert), rate.

Every prompt is `Prompt(prefix, suffix)`. The prefix is identical for every row of a
kind, so a sampler prefills it once and shares its KV cache; the suffix is per row. Both
prefixes end in a newline, so for byte-level BPE tokenizers (SmolLM2, Llama 3) tokenizing
prefix and suffix separately gives the same tokens as tokenizing the joined text.
SentencePiece tokenizers (Llama 2, Mistral) add a leading space to a separately tokenized
suffix; the sampler must tokenize the suffix without that dummy prefix.

Styles:
  original: the original's zero-shot prompts verbatim (for 7B instruct models). The prefix
    is the instruction head, the suffix the `Tool:/Task:/Command:` block; joined they equal
    the original text exactly.
  fewshot: the default for small models. A fixed header with exemplars, then the row in the
    same format, ending where the model continues. The exemplars are `FEWSHOT_GENERATION`,
    `FEWSHOT_RECONSTRUCTION` and `FEWSHOT_RATING` below. They only use documentation address
    ranges (RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), example.com/.org and
    values in no pool of the task bank, so they leak nothing into held-out evaluation
    (tests/test_prompts.py checks this). Rating exemplars spread over 0-9 so the judge is
    not taught one number.

`training_text` returns (prompt, completion) in the generation suffix's format, so
fine-tuning sees what inference sees and the loss can be masked to the command tokens.
Like the original, training text does not include the prefix.
"""

import dataclasses

from inversion_jax.errors import UserError

# (tool, task, command)
FEWSHOT_GENERATION = (
    ('nmap', 'Do a service version scan on 192.0.2.10', 'nmap -sV 192.0.2.10'),
    ('gobuster', 'Enumerate directories on http://example.org using wordlist /opt/lists/paths.txt',
     'gobuster dir -u http://example.org -w /opt/lists/paths.txt'),
    ('hydra', 'Crack the ssh password of user alice on 198.51.100.7 using /opt/lists/pass.txt',
     'hydra -l alice -P /opt/lists/pass.txt ssh://198.51.100.7'),
    ('searchsploit', 'Find exploits for samba 3.0.20', 'searchsploit samba 3.0.20'),
    ('netcat', 'Check if port 2222 is open on 203.0.113.5', 'nc -zv 203.0.113.5 2222'),
    ('sqlmap', 'Test http://example.com/item.php?id=3 for SQL injection',
     'sqlmap -u "http://example.com/item.php?id=3" --batch'),
)

# (tool, command, task)
FEWSHOT_RECONSTRUCTION = (
    ('nmap', 'nmap -O 192.0.2.10', 'Detect the operating system of 192.0.2.10'),
    ('nikto', 'nikto -h 198.51.100.20 -p 8000',
     'Scan the web server on 198.51.100.20 port 8000 for vulnerabilities'),
    ('masscan', 'masscan 198.51.100.0/24 -p0-65535 --rate 100000',
     'Scan all ports of 198.51.100.0/24 at 100000 packets per second'),
    ('dirb', 'dirb http://example.com /opt/lists/paths.txt',
     'Scan http://example.com for directories with the wordlist /opt/lists/paths.txt'),
    ('netcat', 'nc -lvnp 4444', 'Listen on port 4444'),
)

# (task 1, task 2, rating 0-10)
FEWSHOT_RATING = (
    ('Do a service version scan on 192.0.2.10',
     'Detect the versions of the services running on 192.0.2.10', 9),
    ('Find hidden directories on http://example.org',
     'Crack the ssh password of user alice on 198.51.100.7', 0),
    ('Scan ports 8000,8888 on 203.0.113.5', 'Scan 203.0.113.5 for open ports', 6),
    ('Check if port 2222 is open on 192.0.2.44', 'Scan the network 192.0.2.0/28 for web servers',
     2),
    ('Find exploits for samba 3.0.20', 'Look up known exploits for samba version 3.0.20', 8),
)


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A prompt split at the point where rows start to differ."""

  prefix: str
  suffix: str

  @property
  def text(self) -> str:
    return self.prefix + self.suffix


@dataclasses.dataclass(frozen=True)
class PromptStyle:
  """Shared heads and per-row formats for the three kinds of call.

  Row formats are `str.format` templates: generation uses {tool} {task}, reconstruction
  {tool} {command}, rating {task1} {task2}.
  """

  name: str
  generation_head: str
  generation_row: str
  reconstruction_head: str
  reconstruction_row: str
  rating_head: str
  rating_row: str
  # Values are put on one line (the few-shot rows must stay rows); False inserts them
  # verbatim, as the original's f-strings did.
  one_line: bool = True

  def generation(self, tool: str, task: str) -> Prompt:
    return Prompt(self.generation_head, self._fill(self.generation_row, tool=tool, task=task))

  def reconstruction(self, tool: str, command: str) -> Prompt:
    return Prompt(self.reconstruction_head,
                  self._fill(self.reconstruction_row, tool=tool, command=command))

  def rating(self, original: str, reconstruction: str) -> Prompt:
    return Prompt(self.rating_head,
                  self._fill(self.rating_row, task1=original, task2=reconstruction))

  def _fill(self, row: str, **values: str) -> str:
    return _fill(row, **values) if self.one_line else row.format(**values)

  def training_text(self, tool: str, task: str, command: str) -> tuple[str, str]:
    """(prompt, completion) for fine-tuning; the loss belongs on the completion only."""
    return self.generation(tool, task).suffix, ' ' + _one_line(command)


def _one_line(value: str) -> str:
  """Rows must stay on one line or they break the format (cleaned outputs already are)."""
  return ' '.join(value.splitlines()).strip()


def _fill(row: str, **values: str) -> str:
  return row.format(**{key: _one_line(value) for key, value in values.items()})


_ORIGINAL = PromptStyle(
    name='original',
    generation_head=(
        'You are a penetration testing expert. Generate ONLY the command, nothing else.\n\n'),
    generation_row='Tool: {tool}\nTask: {task}\n\nCommand:',
    reconstruction_head=(
        'You are a penetration testing expert. Given this command, describe what task it '
        'accomplishes in one sentence.\n\n'),
    reconstruction_row='Tool: {tool}\nCommand: {command}\n\nThis command will:',
    rating_head=(
        'Rate how similar these two task descriptions are on a scale of 0 to 10.\n'
        'Only output a single number.\n\n'),
    rating_row='Task 1: {task1}\nTask 2: {task2}\n\nSimilarity (0-10):',
    one_line=False,
)

_FEWSHOT_GENERATION_ROW = 'Tool: {tool}\nTask: {task}\nCommand:'
_FEWSHOT_RECONSTRUCTION_ROW = 'Tool: {tool}\nCommand: {command}\nTask:'
_FEWSHOT_RATING_ROW = 'Task 1: {task1}\nTask 2: {task2}\nSimilarity (0-10):'


def _fewshot_head(instruction: str, row: str, keys: tuple[str, ...], examples) -> str:
  """Instruction, then each exemplar as a filled row plus its answer, blank-line separated."""
  blocks = [
      row.format(**dict(zip(keys, example[:-1]))) + f' {example[-1]}' for example in examples
  ]
  return instruction + '\n\n' + '\n\n'.join(blocks) + '\n\n'


_FEWSHOT = PromptStyle(
    name='fewshot',
    generation_head=_fewshot_head(
        'Write the one shell command that does the task with the given tool.',
        _FEWSHOT_GENERATION_ROW, ('tool', 'task'), FEWSHOT_GENERATION),
    generation_row=_FEWSHOT_GENERATION_ROW,
    reconstruction_head=_fewshot_head(
        'Describe in one sentence the task that the command accomplishes.',
        _FEWSHOT_RECONSTRUCTION_ROW, ('tool', 'command'), FEWSHOT_RECONSTRUCTION),
    reconstruction_row=_FEWSHOT_RECONSTRUCTION_ROW,
    rating_head=_fewshot_head(
        'Rate how similar the two task descriptions are on a scale of 0 to 10.',
        _FEWSHOT_RATING_ROW, ('task1', 'task2'), FEWSHOT_RATING),
    rating_row=_FEWSHOT_RATING_ROW,
)

STYLES = {style.name: style for style in (_FEWSHOT, _ORIGINAL)}
DEFAULT_STYLE = 'fewshot'


def get_style(name: str) -> PromptStyle:
  """Looks a style up by name; an unknown name is a user mistake."""
  try:
    return STYLES[name]
  except KeyError:
    raise UserError(
        f'unknown prompt style {name!r}; choose one of {", ".join(sorted(STYLES))}') from None


def training_text(tool: str, task: str, command: str,
                  style: str = DEFAULT_STYLE) -> tuple[str, str]:
  """(prompt, completion) for one selected pair in `style`'s generation format.

  With the original style, prompt + completion is the original's training text
  'Tool: {tool}\\nTask: {task}\\n\\nCommand: {command}'. The trainer appends EOS.
  """
  return get_style(style).training_text(tool, task, command)
