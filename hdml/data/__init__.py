"""Datasets, splits, image decoding and caching, batch samplers and loaders: imports core only."""
