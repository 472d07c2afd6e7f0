"""What every stage's training step shares: an update the device skips when it is not finite, and the
figures a step reports, left on the device for the host to read later (:meth:`pipeline.stages.Stage._reports`).
"""

from __future__ import annotations

from typing import Iterable

import torch


def adam(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Adam, fused: one kernel per device, and an update it can skip on the device (see :func:`descend`)."""
    return torch.optim.Adam(parameters, lr=lr, fused=True)


def buffers_before(*modules: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The modules' buffers (BatchNorm's running statistics), each with a copy taken now, before a step's
    forward pass moves them: :func:`descend` puts them back if it skips the step."""
    return [(buffer, buffer.clone()) for module in modules for buffer in module.buffers()]


def descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor,
            before: list[tuple[torch.Tensor, torch.Tensor]] = ()) -> torch.Tensor:
    """Backpropagate ``loss`` and take the optimiser's step; returns 1.0 (on the device) where the loss or a
    gradient was not finite, and the step then left the weights, the optimiser and the buffers ``before``
    (:func:`buffers_before`) as they were.  Nothing here waits for the device: fused Adam reads the flag
    there (its ``found_inf``, as PyTorch's gradient scaler sets it).  The flag stays up: once a step is
    skipped, so is every later one, until the host reads the first and stops the run, the weights as they
    were before it.

    Under DDP the network's gradients are every rank's average, so all ranks skip alike (the locator's ranks
    of one side draw alike); a loss alone not finite, its gradients finite, would skip one rank's step, and
    the run stops at its report anyway.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    skipped = (~torch.isfinite(loss.detach().float() + torch.nn.utils.get_total_norm(grads))).float()
    earlier = getattr(optimizer, "found_inf", None)
    optimizer.found_inf = skipped = skipped if earlier is None else torch.maximum(skipped, earlier)
    optimizer.step()
    keep = skipped.bool()
    for buffer, saved in before:
        buffer.copy_(torch.where(keep, saved, buffer))
    return skipped


def figures(loss: torch.Tensor, skipped: torch.Tensor, similarity: torch.Tensor | None = None,
            regulariser: torch.Tensor | None = None) -> torch.Tensor:
    """A step's report, unread on the device: ``(loss, similarity, regulariser, skipped)`` (the similarity is the
    loss, the regulariser 0, for a stage without them)."""
    similarity = loss if similarity is None else similarity
    regulariser = torch.zeros_like(loss) if regulariser is None else regulariser
    return torch.stack([loss, similarity, regulariser, skipped]).detach()
