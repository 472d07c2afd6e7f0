"""Torch layer: warping, networks, losses and checkpoints."""
