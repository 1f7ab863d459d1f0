"""Several processes (hosts) in one run: `jax.distributed` from flags or auto-detection.

Every process runs the same program on the same data (the loop is deterministic in the
seed), places its own devices' share of each global batch (`MeshBackend`) and gets the
gathered results; only process 0 prints and writes the run directory. On Cloud TPU VMs
(and SLURM) `auto` lets JAX find the coordinator and the process ids itself.
"""

import jax

from inversion_jax.errors import UserError


def check(coordinator_address: str | None, num_processes: int | None,
          process_id: int | None) -> bool:
  """Whether explicit multi-process flags were given; UserError when they do not fit."""
  given = (coordinator_address, num_processes, process_id)
  if all(v is None for v in given):
    return False
  if num_processes is None or num_processes < 1:
    raise UserError('--num_processes must be a positive integer when --coordinator_address '
                    f'or --process_id is given (got {num_processes})')
  if num_processes > 1 and not coordinator_address:
    raise UserError(f'--num_processes={num_processes} needs --coordinator_address=HOST:PORT '
                    '(the address of process 0, reachable from every process)')
  if process_id is None:
    raise UserError('--process_id is required with --num_processes (0 on the coordinator)')
  if not 0 <= process_id < num_processes:
    raise UserError(f'--process_id={process_id} is out of range: choose 0..{num_processes - 1}'
                    f' for --num_processes={num_processes}')
  return True


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> None:
  """Connects this process to the others; a no-op for a single-process run.

  CPU processes exchange data through gloo (XLA:CPU's collectives); GPUs and TPUs use
  their own interconnect.
  """
  explicit = check(coordinator_address, num_processes, process_id)
  if not (explicit or auto):
    return
  if explicit and num_processes == 1:
    return
  # Before any backend starts (initialize must come first); only XLA:CPU reads it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    if explicit:
      jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
      jax.distributed.initialize()
  except (RuntimeError, ValueError) as error:
    raise UserError(f'could not join the multi-process run ({error}); check '
                    '--coordinator_address, --num_processes and --process_id') from error


def is_main() -> bool:
  return jax.process_index() == 0
