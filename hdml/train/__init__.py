"""One training run: the loop, its resumable state, checkpoints, progress and the run folder."""
