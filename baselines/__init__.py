"""Every method the suite trains, one plug-in module each: the comparison losses of the paper's tables
(and references beyond them: Multi-Similarity, Proxy-Anchor), DAML, and HDML itself (`hdml.py`, with
its generator and augmentor beside it), all on the interfaces of `hdml.methods`. They are registered
by name when `hdml.core.registry.load_plugins` imports every module of this package (no list to keep
here)."""
