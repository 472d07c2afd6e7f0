"""Budgets and the learning-rate schedules shared by the stages' training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class Budget:
    """A stage's budget: ``iterations`` steps or ``seconds`` of ``clock()`` (either None; whichever ends first).

    ``clock`` counts seconds from any origin; under DDP it is rank 0's, so that all ranks stop together.
    ``spent_s``: seconds of it used before (by the session a resumed run stopped in).
    """

    iterations: int | None
    seconds: float | None
    clock: Callable[[], float]
    spent_s: float = 0.0


def budget_used(step: int, iterations: int | None, elapsed_s: float, seconds: float | None) -> float:
    """Fraction of a budget used: the larger of ``step / iterations`` and ``elapsed_s / seconds`` (either None)."""
    return max(step / iterations if iterations else 0.0, elapsed_s / seconds if seconds else 0.0)


def cosine(rate: float, used: float) -> float:
    """``rate`` decayed by a half cosine from the budget's start (``used`` 0) to its end (1 and after: 0)."""
    return rate * 0.5 * (1.0 + math.cos(math.pi * min(used, 1.0)))


def budgeted_steps(optimizer, rate: Callable[[float], float], budget: Budget, start: int = 0) -> Iterator[int]:
    """Step numbers ``start``, ``start + 1``, ... until the budget is used (a budget of 0: none), the
    optimiser's rate set to ``rate(fraction of the budget used)`` before each.

    A resumed stage has what is left of its budget: its steps from ``start``, its seconds after
    ``budget.spent_s``; its schedule goes on from where it stopped.
    """
    step, origin = start, budget.clock() - budget.spent_s
    while budget.iterations != 0 and budget.seconds != 0:
        used = budget_used(step, budget.iterations, budget.clock() - origin, budget.seconds)
        if used >= 1.0:
            return
        for group in optimizer.param_groups:
            group["lr"] = rate(used)
        yield step
        step += 1
