"""Torch layer: warping, networks, the gland locator's and prior's models, losses."""
