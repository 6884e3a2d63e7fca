"""Loom's building blocks: the registry (torch-free) and the built-in blocks.

Import :mod:`blocks.registry` to read block metadata without torch; import
:mod:`blocks.builtin` to register the torch implementations.
"""
