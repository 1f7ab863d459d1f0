"""Task bank: what the loop asks the model to do, as data (templates + slot pools)."""

from inversion_jax.tasks.bank import SPLITS
from inversion_jax.tasks.bank import SlotPool
from inversion_jax.tasks.bank import Task
from inversion_jax.tasks.bank import TaskBank
from inversion_jax.tasks.bank import TaskTemplate
from inversion_jax.tasks.bank import Tool
from inversion_jax.tasks.bank import default_bank
from inversion_jax.tasks.bank import default_bank_path
from inversion_jax.tasks.bank import sample_tasks
