"""Datasets, one module per family. Each returns plain tensors; encoding is separate."""
