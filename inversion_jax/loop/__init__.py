"""The self-improvement loop: run config, experiment wiring, rounds, selection filters, presets."""
