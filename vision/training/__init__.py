"""Training of the bundled demo model (needs the `train` extra: PyTorch CPU)."""
