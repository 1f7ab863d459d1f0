"""The NLC2CMD metric: a command against reference commands, utilities and flags, in [-1, 1].

A second, reference-based measure beside the validator, from the field: the metric of the
NeurIPS 2020 NLC2CMD competition (M. Agarwal, T. Chakraborti, Q. Fu, et al., "NeurIPS 2020
NLC2CMD Competition: Translating Natural Language to Bash Commands", PMLR 133:302-324, 2021,
arXiv:2103.02523; reference implementation IBM/clai `utils/metric/metric_utils.py`).

Definition, as implemented. A command is a sequence of utilities U_1..U_n (the programs of
its pipeline segments, in order), each with a set of flags F(U_i). For a prediction p and
one reference c, with T = max(n_p, n_c) and the shorter side padded with "no utility":

  S_F^i = (2 |F(p_i) & F(c_i)| - |F(p_i) | F(c_i)|) / max(1, |F(p_i)|, |F(c_i)|)
          (1 when neither has a flag)
  S^i   = 1[U(p_i) = U(c_i)] * (1 + S_F^i) / 2  -  1[U(p_i) != U(c_i)]
  S(p, c) = (1/T) sum_i S^i

S_F lies in [-2, 1] (disjoint flag sets count both sides in the union), so a matched
utility scores in [-1/2, 1] and S in [-1, 1]. A task's score is the best over its
references, max_c S(p, c), as the competition scored a prediction against its references.
The competition also weighted each prediction by the model's confidence delta and took the
best of up to five predictions; here there is one greedy prediction per task, delta = 1.
The worked examples of the reference README reproduce (tests/test_nlc2cmd.py): identical
-> 1; a wrong utility -> -1; `find . -type f -ctime -3 | tail -n 5` against
`find . -type f | tail -n 5` -> 0.75; the order of utilities matters; unrequested flags
are penalised.

Parsing differs from the original in how words are read, not in what is scored:
  - Segments come from the project's shell reader (`shell.segments`): `|`, `&&`, `||`, `;`
    and `&` separate utilities; redirections are dropped; launchers (`sudo`, `env X=1`,
    `timeout 30`) are unwrapped, so `sudo nmap` is the utility nmap (Bashlint kept
    `sudo` as a utility of its own).
  - A utility is the tool its program name invokes (`nc`, `netcat`, `nc.openbsd` are one
    tool, by the specs' `binaries`); other programs compare by name, lower-cased as the
    original did.
  - Flags of a known tool are the canonical names of its options, read with the tool's own
    parser rules (`options.parse` on `specs/<tool>.json`): `-p 80`, `-p80` and `--port=80`
    are one flag, a bundle `-lvnp` is four, an alias (`-sR` for `-sV`) is its canonical
    name. The original read flags with Bashlint's grammar from man-page flag tables of
    coreutils-like utilities, which do not cover these tools. Words the tool does not
    document count as flags as written (so an unknown option costs overlap, as in the
    original). A subcommand (gobuster `dir`) counts as a flag: it is not a value. A tool
    with several variants (netcat) is scored under each, the best kept.
  - Flags of other programs are their words starting with `-`, each whole (`--name=value`
    read as `--name`): without the program's flag table a bundle `-rf` cannot be told from
    a one-dash long flag `-name`, so neither is split. With Bashlint's tables the
    reference README's fifth example (`find / -EXdsx -name linux`, 0.1666) split `-EXdsx`
    into five flags; here it is one flag (0.5). The formula itself is tested on the flag
    sets Bashlint read.
  - Flag *values* and positional arguments are ignored, as in the competition ("parameters
    are not taken into consideration"): a wrong host or port is not seen by this measure.
  - A command the shell reader rejects (unbalanced quotes) or that is empty has no
    utilities, so it scores -1 against any reference, as an unparsable prediction did.
Nothing here runs a command: it is parsed as text.
"""

import dataclasses
from collections.abc import Sequence

from inversion_jax.quality import options as options_lib
from inversion_jax.quality import shell
from inversion_jax.quality import specs as specs_lib

MIN_SCORE, MAX_SCORE = -1.0, 1.0


@dataclasses.dataclass(frozen=True)
class Utility:
  name: str
  flags: frozenset[str]


def flag_score(predicted: frozenset[str], reference: frozenset[str]) -> float:
  """S_F: (2 |P & R| - |P | R|) / max(1, |P|, |R|); 1 when neither has a flag."""
  if not predicted and not reference:
    return 1.0
  overlap, union = len(predicted & reference), len(predicted | reference)
  return (2 * overlap - union) / max(1, len(predicted), len(reference))


def utility_score(predicted: Utility | None, reference: Utility | None) -> float:
  """S^i: (1 + S_F) / 2 for the same utility, -1 for another one or none."""
  if predicted is None or reference is None or predicted.name != reference.name:
    return -1.0
  return (1.0 + flag_score(predicted.flags, reference.flags)) / 2.0


def sequence_score(predicted: Sequence[Utility], reference: Sequence[Utility]) -> float:
  """S(p, c): utilities aligned by position, the shorter padded, the mean over T."""
  length = max(len(predicted), len(reference))
  if not length:
    return MIN_SCORE
  padded = lambda seq: list(seq) + [None] * (length - len(seq))
  return sum(utility_score(p, r) for p, r in zip(padded(predicted), padded(reference))) / length


def _generic_flags(args: Sequence[str]) -> frozenset[str]:
  """Flags of a program without a spec: its option words whole, `--name=v` as `--name`."""
  flags = set()
  for word in args:
    if word == '--':
      break
    if options_lib.looks_like_option(word):
      flags.add(word.split('=', 1)[0] if word.startswith('--') else word)
  return frozenset(flags)


def _tool_flags(spec: specs_lib.ToolSpec, args: Sequence[str]) -> frozenset[str]:
  """Canonical option names (and the mode) as the tool's own parser reads `args`."""
  parsed = options_lib.parse(spec, args)
  flags = set(parsed.canonicals()) | set(parsed.unknown)
  if parsed.mode:
    flags.add(parsed.mode)
  return frozenset(flags)


def utilities(command: str, variant_index: int = 0) -> list[Utility]:
  """The utilities of `command`; known tools read with their `variant_index`-th spec."""
  try:
    segments = shell.segments(command or '')
  except shell.ShellSyntaxError:
    return []
  binaries = specs_lib.all_binaries()
  out = []
  for segment in segments:
    tool = binaries.get(segment.program)
    if tool is None:
      out.append(Utility(segment.program.lower(), _generic_flags(segment.args)))
      continue
    variants = specs_lib.get(tool)
    spec = variants[min(variant_index, len(variants) - 1)]
    out.append(Utility(tool, _tool_flags(spec, segment.args)))
  return out


def _variant_count(*commands: str) -> int:
  """The most spec variants any tool of these commands has (netcat: 2)."""
  binaries = specs_lib.all_binaries()
  counts = [1]
  for command in commands:
    try:
      segments = shell.segments(command or '')
    except shell.ShellSyntaxError:
      continue
    counts += [len(specs_lib.get(binaries[s.program])) for s in segments
               if s.program in binaries]
  return max(counts)


def command_score(predicted: str, reference: str) -> float:
  """S(p, c) for one reference, the best over the tools' spec variants."""
  return max(sequence_score(utilities(predicted, index), utilities(reference, index))
             for index in range(_variant_count(predicted, reference)))


def score(predicted: str, references: Sequence[str]) -> float:
  """The task's NLC2CMD score: the best S(p, c) over its references, in [-1, 1]."""
  if not references:
    raise ValueError('the NLC2CMD score needs at least one reference command')
  return max(command_score(predicted, reference) for reference in references)
