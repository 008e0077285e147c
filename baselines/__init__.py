"""Comparison losses of the paper's tables (and references beyond them: Multi-Similarity,
Proxy-Anchor), one module each, registered by name when `hdml.core.registry.load_plugins` imports
every module of this package (no list to keep here)."""
