"""How many CPU threads torch's operations use: all the cores while the machine is ours, fewer when other work
shares it.

OpenMP's worker threads spin between parallel regions.  Alone that is what makes a step fast; beside other
work they steal the cores from it and from each other (two 2-thread runs on 2 cores took 4x, not 2x, their
alone step: benchmarks/README.md, "Sharing the CPU").  :class:`CoreShare` watches, about once a second, how
many cores the rest of the machine keeps busy and sets torch's intra-op threads to the cores left over (at
least one, at most the count torch started with).  Alone, nothing changes; two runs settle on a core each.

``OMP_NUM_THREADS`` set by the user fixes the count: nothing adapts (torchrun sets it to 1 for its ranks).
torch's thread count is the calling thread's: call :meth:`CoreShare.__call__` from the thread that computes.
"""

from __future__ import annotations

import os
import time

import torch

INTERVAL_S = 1.0  # how often the machine's load is read


def _machine_busy_s() -> float | None:
    """CPU seconds the cores this process may run on have spent busy since boot (None without /proc/stat).

    Only those cores: in a container, /proc/stat may list the whole host's.
    """
    mine = {f"cpu{i}" for i in _allowed()}
    busy = 0
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                name, *values = line.split()
                if name in mine:
                    # user nice system idle iowait irq softirq; a hypervisor's steal is not work on this machine
                    ticks = [int(v) for v in values[:7]]
                    busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError, IndexError):
        return None
    return busy / os.sysconf("SC_CLK_TCK") if mine else None


def _allowed() -> set[int]:
    """The cores this process may run on."""
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not Linux (where /proc/stat is absent too)
        return set(range(os.cpu_count() or 1))


class CoreShare:
    """Torch's intra-op threads sized to the cores the rest of the machine leaves free, re-read each second.

    ``busy`` and ``cores`` are seams for tests: the machine's busy CPU seconds and its core count.
    """

    def __init__(self, *, busy=_machine_busy_s, cores: int | None = None, clock=time.monotonic) -> None:
        self.busy, self.clock = busy, clock
        self.cores = cores or len(_allowed())
        self.most = torch.get_num_threads()
        self.fixed = "OMP_NUM_THREADS" in os.environ or busy() is None or self.most < 2
        self._last = self._read() if not self.fixed else None

    def _read(self) -> tuple[float, float, float]:
        return self.clock(), self.busy(), time.process_time()

    def threads_for(self, others_cores: float) -> int:
        """The threads to use while the rest of the machine keeps ``others_cores`` cores busy."""
        return max(1, min(self.most, self.cores - round(others_cores)))

    def __call__(self) -> int:
        """Re-read the machine's load when a second has passed, set the threads; returns the count in use."""
        if self.fixed:
            return torch.get_num_threads()
        now = self._read()
        wall = now[0] - self._last[0]
        if wall < INTERVAL_S:
            return torch.get_num_threads()
        ours = now[2] - self._last[2]  # this process's threads, the GUI's included: ours to share
        others = max(0.0, (now[1] - self._last[1]) - ours) / wall
        self._last = now
        threads = self.threads_for(others)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads
