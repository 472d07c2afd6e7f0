"""Device, precision and memory layout: one place decides them."""

from __future__ import annotations

import contextlib

import torch


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU."""
    if device and device != "auto":
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_layout(x, precision: str):
    """Channels-last memory for bf16 (oneDNN's and cuDNN's fast path); unchanged for fp32."""
    return x.to(memory_format=torch.channels_last_3d) if precision == "bf16" else x


def autocast(device: torch.device, precision: str):
    """bf16 autocast context (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
