"""Comparison losses of the paper's tables (and Multi-Similarity, a reference beyond them), one module
each, registered by name on import."""
from baselines import angular, contrastive, ddml, lifted, multisimilarity, npair, semihard, triplet  # noqa: F401
