"""Metrics computed from trained models: sparsity, class magnitudes, IWAE, disentanglement."""
