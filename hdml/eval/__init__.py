"""Embeddings to numbers: nearest-neighbour search, k-means, retrieval and clustering metrics,
checkpoint selection, t-SNE and aggregation."""
