"""Device, precision and memory layout: one place decides them.

Under ``torchrun`` every process is a rank with its own GPU, ``LOCAL_RANK`` (its index on its machine); a
bare ``cuda`` means that GPU, never GPU 0 on every rank.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine as torchrun set it (its GPU's index)."""
    return int(os.environ.get("LOCAL_RANK", launched_rank()))


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given (``auto``: not given), else CUDA when present, else CPU.  CUDA without an index is
    this process's GPU (``LOCAL_RANK``), made the current one."""
    wanted = device if device and device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(wanted)
    except RuntimeError:
        raise ValueError(f"device {wanted!r}: not a device (cpu, cuda, cuda:1, ...)") from None
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise ValueError(f"device {wanted!r}: this tool trains and registers on cpu or cuda")
    if not torch.cuda.is_available():
        raise ValueError(f"device {wanted!r}: this machine has no CUDA GPU that torch can use (--device cpu)")
    count = torch.cuda.device_count()
    index = local_rank() if chosen.index is None else chosen.index
    if index >= count:
        raise ValueError(f"device cuda:{index}: this machine shows {count} GPU{'s' * (count != 1)}; run at most "
                         f"{count} processes per machine (torchrun --nproc_per_node {count})")
    chosen = torch.device("cuda", index)
    torch.cuda.set_device(chosen)
    return chosen


def pick_precision(device: torch.device, requested: str) -> tuple[str, str]:
    """(precision, why): ``bf16`` where ``device`` runs bf16 convolutions natively, else ``fp32``.

    CUDA: compute capability 8.0 and after (Ampere on; a V100, T4 or RTX 20xx would emulate it, slowly).
    CPU: oneDNN's bf16 path (AVX512-BF16 or AMX).  ``why`` is empty when the request is met.
    """
    if requested == "fp32":
        return "fp32", ""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return "bf16", ""
        return "fp32", (f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no native "
                        "bf16: fp32 instead")
    if device.type == "cpu":
        if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return "bf16", ""
        return "fp32", "this CPU has no native bf16 (AVX512-BF16 or AMX): fp32 instead"
    return "fp32", f"bf16 is not supported here on {device.type}: fp32 instead"


def fast_layout(x, precision: str):
    """Channels-last memory for bf16 (oneDNN's and cuDNN's fast path); unchanged for fp32."""
    return x.to(memory_format=torch.channels_last_3d) if precision == "bf16" else x


def autocast(device: torch.device, precision: str):
    """bf16 autocast context (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host tensor ``x`` on ``device``, the host not waiting for the device: a plain copy from pageable memory
    would make it wait for everything queued on a GPU."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def to_host(x: torch.Tensor) -> Callable[[], list]:
    """Start copying ``x`` to the host; the function returned waits for that copy alone (not for work queued
    after it) and gives ``x`` as a list."""
    if x.device.type != "cuda":
        return x.tolist
    host = x.to("cpu", non_blocking=True)  # pinned by torch
    copied = torch.cuda.Event()
    copied.record()

    def read() -> list:
        copied.synchronize()
        return host.tolist()

    return read
