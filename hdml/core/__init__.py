"""Configuration, the plug-in registry and small shared utilities: the bottom layer, importing no other layer."""
