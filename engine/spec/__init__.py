"""Spec loading, resolution and validation (torch-free)."""
