"""Generation: the sampler, the batched generator, its batching and compaction, forward passes without sampling, prompt styles."""
