"""Sample data: a phantom MR/TRUS pair from the engine's generator (no download)."""

from __future__ import annotations

import numpy as np


def phantom_pair(seed: int = 0) -> list[tuple]:
    """MR and TRUS images and their label stacks (value k+1 = label pair k), with voxel spacing."""
    from .core.phantom import make_phantom

    pair = make_phantom(seed, fixed_shape=(40, 48, 36), moving_shape=(48, 48, 44), spacing=1.5).pair
    layers = []
    for side, vol, labels in (("moving", pair.moving, pair.moving_labels), ("fixed", pair.fixed, pair.fixed_labels)):
        modality = "MR" if side == "moving" else "TRUS"
        scale = tuple(vol.grid.spacing)
        layers.append((vol.data, {"name": f"{modality} image ({side})", "scale": scale, "colormap": "gray"}, "image"))
        stack = np.zeros(vol.grid.shape, np.uint8)
        for k, mask in enumerate(labels):
            stack[mask] = k + 1
        layers.append((stack, {"name": f"{modality} labels ({side})", "scale": scale, "opacity": 0.5}, "labels"))
    return layers
