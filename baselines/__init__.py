"""Comparison losses of the paper's tables, one module each, registered by name on import."""
from baselines import npair, triplet  # noqa: F401
