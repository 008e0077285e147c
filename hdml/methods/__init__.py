"""The training-method interface and what every method shares (optimiser, schedule, gradient
routing); the plug-ins are in `baselines/`."""
