"""Internals shared by every layer: errors, registries, lazy imports, atomic files."""
