"""hdml-repro: a reproducibility suite for Hardness-Aware Deep Metric Learning (CVPR 2019)."""

__version__ = "0.2.0"
