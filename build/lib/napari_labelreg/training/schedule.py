"""Budgets and the cosine learning-rate decay shared by the training phases."""

from __future__ import annotations

import math
from typing import Callable, Iterator


def budget_used(step: int, iterations: int | None, elapsed_s: float, seconds: float | None) -> float:
    """Fraction of a budget used: the larger of ``step / iterations`` and ``elapsed_s / seconds`` (either None)."""
    return max(step / iterations if iterations else 0.0, elapsed_s / seconds if seconds else 0.0)


def cosine(rate: float, used: float) -> float:
    """``rate`` decayed by a half cosine from the budget's start (``used`` 0) to its end (1 and after: 0)."""
    return rate * 0.5 * (1.0 + math.cos(math.pi * min(used, 1.0)))


def budgeted_steps(optimizer, rate: float, iterations: int | None, seconds: float | None,
                   clock: Callable[[], float]) -> Iterator[int]:
    """Step numbers 0, 1, ... until ``iterations`` or ``seconds`` of ``clock()`` are used (a budget of 0: none),
    the optimiser's rate set to :func:`cosine` of the budget used before each."""
    step, start = 0, clock()
    while iterations != 0 and seconds != 0:
        used = budget_used(step, iterations, clock() - start, seconds)
        if used >= 1.0:
            return
        for group in optimizer.param_groups:
            group["lr"] = cosine(rate, used)
        yield step
        step += 1
