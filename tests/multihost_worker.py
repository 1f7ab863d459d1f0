"""One process of the 2-process `jax.distributed` test (tests/test_multihost.py).

    multihost_worker.py PROCESS_ID PORT MODEL.gguf OUT_DIR

Joins a 2-process run on 127.0.0.1:PORT with 2 CPU devices per process, builds the mesh
backend over all 4 devices, and writes what it computed to OUT_DIR/process_<id>.npz: a
greedy and a sampled generation batch, the next-token logits, and one train step. Run
directly, it computes the same on one process (`PROCESS_ID = -1`).
"""

import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def compute(model_path: str, num_devices: int):
  """Scoring and one train step on the mesh backend; NumPy results."""
  import jax  # pylint: disable=g-import-not-at-top
  from inversion_jax import parallel
  from inversion_jax.decode import generation
  from inversion_jax.decode.sampling import SamplingConfig
  from inversion_jax.nn import lora as lora_lib, model as model_lib
  from inversion_jax.nn.loading import registry
  from inversion_jax.train import training

  config, flat, tokenizer = registry.load_model_source(model_path)
  graphdef, state = model_lib.from_flat_params(config, flat)
  backend = parallel.make_backend('mesh', num_devices)
  gen = generation.Generator(graphdef, state, tokenizer, show_progress=False, backend=backend,
                             max_batch=8)
  prompts = [('Tool: nmap\nTask: ', f'scan host {i}\nCommand:') for i in range(6)]
  greedy = gen.generate(prompts, SamplingConfig(0.0, 10))
  sampled = gen.generate(prompts, SamplingConfig(1.0, 10), seed=3)
  logits = gen.last_token_logits(prompts)

  lora_graphdef, lora_state = lora_lib.add_lora(graphdef, state,
                                                lora_lib.LoRAConfig(rank=4, dropout=0.3))
  lora_graphdef, lora, base = lora_lib.split_lora(lora_graphdef, lora_state)
  trainer = training.Trainer(lora_graphdef, base, training.TrainConfig(learning_rate=1e-2,
                                                                       batch_size=4),
                             show_progress=False, backend=backend)
  examples = [training.make_example(tokenizer, p + s, f' nmap -sV 10.0.0.{i}')
              for i, (p, s) in enumerate(prompts[:4])]
  result = trainer.run(lora, trainer.init_opt_state(lora), examples, seed=1)
  return dict(greedy=np.asarray(greedy.texts), sampled=np.asarray(sampled.texts),
              logits=logits, loss=np.asarray(result.losses),
              **{f'lora_{i}': np.asarray(x) for i, x in enumerate(jax.tree.leaves(result.lora))},
              processes=np.asarray(jax.process_count()), devices=np.asarray(jax.device_count()))


def main(argv):
  process_id, port, model_path, out_dir = int(argv[1]), argv[2], argv[3], argv[4]
  if process_id >= 0:
    from inversion_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
    distributed.initialize(f'127.0.0.1:{port}', 2, process_id)
  results = compute(model_path, num_devices=2 if process_id >= 0 else 1)
  np.savez(os.path.join(out_dir, f'process_{process_id}.npz'), **results)


if __name__ == '__main__':
  main(sys.argv)
