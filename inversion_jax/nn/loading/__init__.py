"""Checkpoint loaders: GGUF and Hugging Face files into flat parameters, and the model registry."""
