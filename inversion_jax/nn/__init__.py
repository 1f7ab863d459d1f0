"""The network: model config, the Llama model, LoRA, int8 weights, tokenizers, checkpoint loaders."""
