"""Backbones and the embedding head: imports core and data only."""
