"""Intrinsic scoring: how well a command's reconstruction matches its task."""
