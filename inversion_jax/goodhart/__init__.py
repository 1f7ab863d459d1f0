"""Watching the Goodhart gap: metric tables, the gold monitor, label-free signals and their limits, detectors."""
