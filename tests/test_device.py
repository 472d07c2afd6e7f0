"""Device, process group and precision choices, with CUDA's queries mocked: what a GPU host would get."""

import pytest
import torch

from napari_labelreg.nn import device as dev
from napari_labelreg.training import distributed


@pytest.fixture
def gpus(monkeypatch):
    """A host with ``n`` GPUs of compute capability ``cc`` (torch's queries answered as CUDA would)."""
    current = []

    def make(n: int = 2, cc=(8, 0), name="NVIDIA A100"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: cc)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
        monkeypatch.setattr(torch.cuda, "set_device", current.append)
        return current

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return make


def test_a_bare_cuda_is_this_ranks_own_gpu_made_current(gpus, monkeypatch):
    current = gpus(2)
    assert dev.pick_device() == torch.device("cuda", 0)  # not under torchrun: GPU 0
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dev.pick_device("cuda") == dev.pick_device("auto") == torch.device("cuda", 1)
    assert dev.pick_device("cuda:0") == torch.device("cuda", 0)  # an index given is kept
    assert current == [torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cuda", 1),
                       torch.device("cuda", 0)]
    assert dev.pick_device("cpu") == torch.device("cpu")  # asked for: the CPU, GPUs or not


def test_more_processes_than_gpus_is_one_clear_error(gpus, monkeypatch):
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match=r"^device cuda:2: this machine shows 2 GPUs; run at most 2 processes per "
                                         r"machine \(torchrun --nproc_per_node 2\)$"):
        dev.pick_device()


def test_cuda_asked_for_where_there_is_none(gpus):
    gpus(0)
    assert dev.pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="has no CUDA GPU that torch can use"):
        dev.pick_device("cuda")
    with pytest.raises(ValueError, match="not a device"):
        dev.pick_device("gpu0")
    for other in ("mps", "xpu", "meta"):  # torch knows them; training here would fail deep inside
        with pytest.raises(ValueError, match=f"^device '{other}': this tool trains and registers on cpu or cuda$"):
            dev.pick_device(other)


@pytest.mark.parametrize("cc,name,expected", [
    ((8, 0), "NVIDIA A100", "bf16"), ((9, 0), "NVIDIA H200", "bf16"),
    ((7, 0), "Tesla V100", "fp32"), ((7, 5), "Tesla T4", "fp32"),
])
def test_bf16_only_on_gpus_that_run_it_natively(gpus, cc, name, expected):
    gpus(1, cc, name)
    precision, why = dev.pick_precision(torch.device("cuda", 0), "bf16")
    assert precision == expected
    assert why == ("" if expected == "bf16" else
                   f"{name} (compute capability {cc[0]}.{cc[1]}) has no native bf16: fp32 instead")
    assert dev.pick_precision(torch.device("cuda", 0), "fp32") == ("fp32", "")


def test_bf16_on_the_cpu_only_with_onednns_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert dev.pick_precision(cpu, "bf16") == ("bf16", "")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert dev.pick_precision(cpu, "bf16") == ("fp32", "this CPU has no native bf16 (AVX512-BF16 or AMX): "
                                                       "fp32 instead")


@pytest.mark.parametrize("device,backend", [(torch.device("cuda", 1), "nccl"), (torch.device("cpu"), "gloo")])
def test_the_process_group_follows_the_device_asked_for(monkeypatch, device, backend):
    """``--device cpu`` on a GPU host is gloo, and NCCL is bound to the rank's own GPU."""
    started = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(started))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda b, **kw: started.append((b, kw)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "new_group", lambda backend: started.append(("group", backend)))
    monkeypatch.setattr(distributed, "_HOST_GROUP", [])
    assert distributed.distributed_context(device) == (1, 2)
    # under NCCL the clock goes between the hosts through a gloo group of its own: NCCL would wait for the GPU
    assert started == ([("nccl", {"device_id": device}), ("group", "gloo")] if backend == "nccl" else [("gloo", {})])


def test_a_run_says_and_records_the_precision_it_trains_in(monkeypatch, tmp_path):
    import json

    from napari_labelreg.config import ModelConfig, TrainConfig
    from napari_labelreg.core.phantom import make_phantom
    from napari_labelreg.pipeline.train import Trainer

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, precision="bf16")
    trainer = Trainer([make_phantom(0, fixed_shape=(16, 16, 16), moving_shape=(16, 16, 16)).pair], config, tmp_path)
    assert trainer.config.precision == "fp32" and "no native bf16" in trainer.precision_note
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == "fp32"


def test_the_affine_parts_stay_fp32_under_autocast():
    from napari_labelreg.nn.networks import CompositeNet, affine_ddf

    theta = (torch.eye(3, 4) + 1e-3 * torch.arange(12.0).view(3, 4))[None]
    exact = affine_ddf(theta, (8, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(affine_ddf(theta, (8, 8, 8)), exact)  # bf16 would round the 1e-3 terms away
        out = CompositeNet(4)(torch.randn(2, 2, 16, 16, 16))
    assert out.dtype == torch.float32
