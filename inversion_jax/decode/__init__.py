"""Generation: sampling, the batched generator and its wave scheduler, prompt styles."""
