"""LoRA training, Orbax checkpoints of a run, adapter export."""
