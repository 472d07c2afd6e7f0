"""torchrun's environment, read in one place, and the process group a run joins."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine as torchrun set it (its GPU's index)."""
    return int(os.environ.get("LOCAL_RANK", launched_rank()))


def distributed_context() -> tuple[int, int]:
    """(rank, world size), starting the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def rank_zero_seconds(seconds: float, world: int, device: torch.device) -> float:
    """``seconds`` as rank 0 measured them, so that all ranks stop and schedule their rates alike."""
    if world == 1:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t)
