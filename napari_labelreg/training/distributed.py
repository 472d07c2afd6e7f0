"""The process group a run joins under torchrun, and rank 0's clock."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


_HOST_GROUP: list = []  # under NCCL, a gloo group for figures the host keeps (the clock): see rank_zero_seconds


def distributed_context(device: torch.device) -> tuple[int, int]:
    """(rank, world size), starting the process group when run under torchrun: NCCL bound to this rank's GPU
    when it trains on CUDA (with a gloo group beside it for the host's figures), gloo when on the CPU
    (whatever else the machine has)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
            _HOST_GROUP[:] = [dist.new_group(backend="gloo")]
        else:
            dist.init_process_group("gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def rank_zero_seconds(seconds: float, world: int) -> float:
    """``seconds`` as rank 0 measured them, so that all ranks stop and schedule their rates alike.

    Sent between the hosts (gloo): through NCCL it would wait for the work queued on each GPU.
    """
    if world == 1:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64)
    dist.broadcast(t, src=0, group=_HOST_GROUP[0] if _HOST_GROUP else None)
    return float(t)


def broadcast_module(module: torch.nn.Module, world: int, device: torch.device) -> None:
    """Every rank takes rank 0's parameters and buffers of ``module``, through ``device`` (the process group's:
    NCCL sends only GPU tensors).  For a stage every rank fits alike, whose kernels need not agree bit for bit
    on a GPU."""
    if world == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            sent = tensor.data.to(device)
            dist.broadcast(sent, src=0)
            tensor.data.copy_(sent)


def ranks_agree(module: torch.nn.Module, world: int, device: torch.device) -> bool:
    """Whether every rank holds rank 0's parameters of ``module``: per tensor, its sum and sum of squares (in
    float64) compared with rank 0's.  True alone."""
    if world == 1:
        return True
    with torch.no_grad():
        mine = torch.stack([s for p in module.parameters() for s in (p.double().sum(), p.double().square().sum())])
    mine = mine.to(device)
    theirs = mine.clone()
    dist.broadcast(theirs, src=0)
    same = torch.tensor([float(torch.equal(mine, theirs))], device=device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())
