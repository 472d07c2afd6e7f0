"""CoreShare: torch's threads sized to the cores other work leaves free (a simulated machine, no timing)."""

import pytest
import torch

from napari_labelreg.nn import threads
from napari_labelreg.nn.threads import CoreShare


class Machine:
    """A clock and the machine's busy CPU seconds, both moved by the test."""

    def __init__(self) -> None:
        self.now, self.busy_s = 0.0, 0.0

    def run(self, seconds: float, others_cores: float, ours_cores: float, monkeypatch) -> None:
        self.now += seconds
        self.busy_s += seconds * (others_cores + ours_cores)
        ours = self.ours_s = getattr(self, "ours_s", 0.0) + seconds * ours_cores
        monkeypatch.setattr(threads.time, "process_time", lambda: ours)


@pytest.fixture
def machine(monkeypatch):
    kept = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "INTERVAL_S", 1.0)  # conftest holds it still for the other tests
    torch.set_num_threads(4)
    m = Machine()
    m.run(0.0, 0.0, 0.0, monkeypatch)
    yield m
    torch.set_num_threads(kept)


def share(m: Machine, cores: int = 4) -> CoreShare:
    return CoreShare(busy=lambda: m.busy_s, cores=cores, clock=lambda: m.now)


def test_alone_every_thread_torch_started_with_is_kept(machine, monkeypatch):
    s = share(machine)
    for _ in range(5):
        machine.run(1.5, others_cores=0.3, ours_cores=4.0, monkeypatch=monkeypatch)
        assert s() == 4 and torch.get_num_threads() == 4


def test_the_threads_give_way_to_other_work_and_come_back_when_it_ends(machine, monkeypatch):
    s = share(machine)
    machine.run(1.5, others_cores=3.0, ours_cores=1.0, monkeypatch=monkeypatch)
    assert s() == 1 and torch.get_num_threads() == 1  # 4 cores, 3 kept busy by others
    machine.run(1.5, others_cores=2.0, ours_cores=1.0, monkeypatch=monkeypatch)
    assert s() == 2
    machine.run(1.5, others_cores=8.0, ours_cores=0.5, monkeypatch=monkeypatch)  # overloaded: one thread, never 0
    assert s() == 1
    machine.run(1.5, others_cores=0.0, ours_cores=1.0, monkeypatch=monkeypatch)
    assert s() == 4  # never more than torch started with


def test_the_load_is_read_once_a_second_not_at_every_step(machine, monkeypatch):
    s = share(machine)
    machine.run(0.4, others_cores=4.0, ours_cores=0.0, monkeypatch=monkeypatch)
    assert s() == 4  # under a second: not read yet
    machine.run(0.7, others_cores=4.0, ours_cores=0.0, monkeypatch=monkeypatch)
    assert s() == 1  # over the whole 1.1 s


def test_two_runs_sharing_two_cores_settle_on_one_thread_each():
    # each sees the other keep its threads busy: two cores' worth while both spin, one once both gave way
    run = CoreShare(busy=lambda: 0.0, cores=2)
    run.most = 2
    assert run.threads_for(1.0) == 1 and run.threads_for(0.9) == 1 and run.threads_for(0.3) == 2


def test_omp_num_threads_set_by_the_user_fixes_the_count(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    s = share(machine)
    machine.run(1.5, others_cores=4.0, ours_cores=0.0, monkeypatch=monkeypatch)
    assert s.fixed and s() == 4 and torch.get_num_threads() == 4


def test_without_proc_stat_nothing_adapts(machine, monkeypatch):
    s = CoreShare(busy=lambda: None, cores=4, clock=lambda: machine.now)
    machine.run(1.5, others_cores=4.0, ours_cores=0.0, monkeypatch=monkeypatch)
    assert s.fixed and s() == 4


def test_the_machine_s_load_is_read_from_proc_stat_for_this_process_s_cores():
    busy = threads._machine_busy_s()
    if busy is None:
        pytest.skip("no /proc/stat")
    assert busy > 0 and threads._machine_busy_s() >= busy
