"""Comparison losses of the paper's tables, one module each, registered by name on import."""
from baselines import angular, contrastive, ddml, lifted, npair, proxyanchor, semihard, triplet  # noqa: F401
