"""DistributedDataParallel under torchrun: 2 CPU processes (gloo) end with identical weights."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.mark.parametrize("budget", ["iterations", "minutes"])
def test_two_gloo_ranks_end_identical(tmp_path, budget):
    # a minutes budget with a cosine rate: the ranks' clocks differ, yet they stop at the same step
    # with the same rates (rank 0's clock rules), instead of one rank waiting forever for the other
    worker = Path(__file__).with_name("ddp_worker.py")
    port = {"iterations": "29517", "minutes": "29519"}[budget]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           str(worker), str(tmp_path), *(["minutes"] if budget == "minutes" else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["world"] == b["world"] == 2 and a["step"] == b["step"]
    assert a["step"] == 3 if budget == "iterations" else a["step"] > 3
    assert not torch.equal(a["first_batch"], b["first_batch"])  # each rank draws its own quartets
    for key, value in a["model"].items():
        if "running_" in key or "num_batches" in key:
            continue  # BatchNorm statistics are per rank between DDP's buffer broadcasts
        assert torch.equal(value, b["model"][key]), key
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # written by rank 0 alone


def test_the_ranks_share_out_the_locators_sides_and_end_with_one_processs_locator(tmp_path):
    from dataclasses import replace

    from ddp_worker import setup

    from napari_labelreg.pipeline.train import Trainer

    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29520",
           str(worker), str(tmp_path), "locator"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["locator"] for r in range(2)]
    # one process, one thread like each rank, at the ranks' effective batch (2 x 2), draws both sides alike
    pairs, per_rank = setup("locator")
    config = replace(per_rank, batch_size=2 * per_rank.batch_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = Trainer(pairs, config, tmp_path / "alone")
        assert [r.stage for r in alone][:3] == ["locate", "locate", "refine"]
    finally:
        torch.set_num_threads(threads)
    initial = Trainer(pairs, replace(config, iterations=1), tmp_path / "initial").stage("locate").locator.state_dict()
    for name, value in alone.stage("locate").locator.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        torch.testing.assert_close(ranks[0][name], value, msg=name)
    changed = {name.split(".")[1] for name, value in initial.items()
               if value.is_floating_point() and not torch.equal(value, ranks[0][name])}
    assert changed == {"moving", "fixed"}  # both sides trained, each by its own rank


def test_torchrun_runs_the_cli(phantom_folder, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
           "-m", "napari_labelreg", "train", "--data", str(phantom_folder), "--out", str(tmp_path / "run"),
           "--width", "4", "--iterations", "2", "--geometry", "centred", "--precision", "fp32", "--batch-size", "2",
           "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["stages"]["refine"]["step"] == 1  # of 2 steps in all, the cpu preset's locator takes one
    assert (tmp_path / "run" / "training_set.json").is_file()


def test_every_variant_and_the_cpu_presets_stages_train_under_ddp_to_identical_weights(tmp_path):
    """delta1-4 once died at its second step (an up-sampling block no head read had no gradient); the gland
    prior, fitted on each rank, is rank 0's on all."""
    from ddp_worker import VARIANTS

    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29521",
           str(worker), str(tmp_path), "variants"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    for name in VARIANTS:
        a, b = (torch.load(tmp_path / f"{name}.rank{r}.pt", weights_only=True) for r in range(2))
        assert a["steps"] == b["steps"] and a["steps"]["refine"] >= 1, (name, a["steps"])
        assert a["weights"].keys() == b["weights"].keys()
        for stage, weights in a["weights"].items():
            for key, value in weights.items():
                if "running_" in key or "num_batches" in key:
                    continue  # BatchNorm statistics are per rank between DDP's buffer broadcasts
                assert torch.equal(value, b["weights"][stage][key]), (name, stage, key)
    stages = torch.load(tmp_path / "stages.rank0.pt", weights_only=True)
    assert set(stages["weights"]) == {"locate", "prior", "refine"}


CLI_VARIANTS = ["baseline", "delta0", "delta1-4", "global", "composite", "delta1-4 --prefilter", "the cpu preset"]


@pytest.mark.parametrize("variant", CLI_VARIANTS)
def test_torchrun_trains_every_variant_from_the_command_line_to_identical_weights(phantom_folder, tmp_path, variant):
    """What a user types: ``torchrun --nproc_per_node 2 -m napari_labelreg train --device cpu ...``."""
    chosen = [] if variant == "the cpu preset" else ["--preset", "paper", "--variant", *variant.split()]
    port = str(29540 + CLI_VARIANTS.index(variant))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "napari_labelreg", "train", "--data", str(phantom_folder), "--out", str(tmp_path / "run"),
           *chosen, "--width", "4", "--iterations", "3", "--geometry", "centred", "--device", "cpu",
           "--batch-size", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on cpu, 2 processes, precision" in out.stdout
    assert "2 processes: the weights are identical on every rank" in out.stdout, out.stdout[-2000:]
