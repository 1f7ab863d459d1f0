"""Real quality: the static validator, graded quality, NLC2CMD and the held-out set."""
