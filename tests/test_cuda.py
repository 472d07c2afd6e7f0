"""On a CUDA GPU (skipped without one): every network, a training run and registration agree with the CPU within
stated tolerances (CUDA's grid_sample backward and cuDNN's algorithms are not bitwise deterministic)."""

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]


@pytest.mark.parametrize("variant", ["baseline", "delta0", "delta1-4", "global", "composite"])
def test_each_network_on_cuda_matches_the_cpu(variant):
    from napari_labelreg.config import ModelConfig
    from napari_labelreg.nn.networks import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=variant, width=4)).eval()
    for p in model.parameters():  # heads start at zero: give them something to compute
        p.data.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        cpu = model(x)
        gpu = model.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-2)  # cuDNN may pick TF32 convolutions


def test_a_run_trains_and_registers_on_cuda(tmp_path):
    from napari_labelreg.config import ModelConfig, TrainConfig
    from napari_labelreg.core.phantom import make_phantom
    from napari_labelreg.pipeline.registrator import Registrator
    from napari_labelreg.pipeline.train import Trainer

    pairs = [make_phantom(s, fixed_shape=(24, 24, 20), moving_shape=(24, 24, 20)).pair for s in range(2)]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=3, batch_size=2)
    trainer = Trainer(pairs, config, tmp_path, device="cuda")
    reports = list(trainer)
    assert trainer.device.type == "cuda" and all(torch.isfinite(torch.tensor(r.loss)) for r in reports)
    gpu = Registrator.from_run(tmp_path, device="cuda").register(pairs[0].moving, pairs[0].fixed)
    cpu = Registrator.from_run(tmp_path, device="cpu", precision="fp32").register(pairs[0].moving, pairs[0].fixed)
    assert abs(gpu.ddf_mm - cpu.ddf_mm).max() < 0.05  # mm: bf16 on the GPU against fp32 on the CPU


@pytest.mark.parametrize("variant", ["baseline", "composite"])
def test_training_never_makes_the_host_wait_for_the_gpu(tmp_path, variant):
    """Batches built on the GPU from pinned copies, non-finite steps skipped there, each step's figures read
    through an event once the next step is queued: CUDA's sync debug mode sees no wait."""
    from napari_labelreg.config import ModelConfig, TrainConfig
    from napari_labelreg.core.phantom import make_phantom
    from napari_labelreg.pipeline.train import Trainer

    pairs = [make_phantom(s, fixed_shape=(24, 24, 20), moving_shape=(24, 24, 20)).pair for s in range(2)]
    config = TrainConfig(model=ModelConfig(variant=variant, width=4), geometry="centred", iterations=8,
                         batch_size=2, checkpoint_every=100)
    run = iter(Trainer(pairs, config, tmp_path, device="cuda"))
    next(run)  # the first steps: cuDNN's algorithm search, the optimiser's state
    torch.cuda.set_sync_debug_mode("error")
    try:
        reports = [next(run) for _ in range(4)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    list(run)
    assert [r.step for r in reports] == [2, 3, 4, 5]
