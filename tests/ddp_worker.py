"""Run by torchrun from test_distributed.py (not a test module): train, then save this rank's weights.

``worker.py OUT`` trains 3 iterations; ``worker.py OUT minutes`` trains for 6 seconds under a cosine
schedule with rank 1 starting its clock 0.5 s late, as ranks on a busy machine do; ``worker.py OUT
locator`` trains a gland locator for 2 steps first (the ranks share its two sides), then 4 iterations.
``worker.py OUT variants`` trains each of :data:`VARIANTS` for 2 steps in turn (one launch for all) and saves
every rank's weights of each as ``NAME.rankR.pt``.
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from napari_labelreg.config import ModelConfig, TrainConfig
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.pipeline.train import Trainer
from napari_labelreg.training.refine import Batcher


# name -> changes to the per-rank config: every network, pre-filtered labels, and the cpu preset's stages
VARIANTS = {
    "baseline": {}, "delta0": {"variant": "delta0"}, "delta1-4": {"variant": "delta1-4"},
    "global": {"variant": "global"}, "composite": {"variant": "composite"},
    "delta1-4-prefilter": {"variant": "delta1-4", "prefilter": True},
    "composite-prefilter": {"variant": "composite", "prefilter": True},
    "stages": {"locator": 0.3, "prior": 0.3},
}


def variant_config(config: TrainConfig, changes: dict) -> TrainConfig:
    model = replace(config.model, variant=changes.get("variant", config.model.variant))
    loss = replace(config.loss, prefilter=changes.get("prefilter", config.loss.prefilter))
    stages = {k: v for k, v in changes.items() if k in ("locator", "prior")}
    return replace(config, model=model, loss=loss, iterations=6 if stages else 2, **stages)


def setup(mode: str | None = None) -> tuple[list, TrainConfig]:
    """The pairs and per-rank config of a ``mode`` run (also what test_distributed compares against)."""
    pairs = [make_phantom(s, fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5).pair for s in range(3)]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", learning_rate=1e-3, iterations=3,
                         batch_size=2, precision="fp32")
    if mode == "minutes":
        config = replace(config, iterations=None, minutes=0.1, schedule="cosine")
    if mode == "locator":
        config = replace(config, iterations=4, locator=0.5)
    return pairs, config


def variants(out: Path) -> None:
    pairs, config = setup()
    for name, changes in VARIANTS.items():
        trainer = Trainer(pairs, variant_config(config, changes), out / name, device="cpu")
        for _ in trainer:
            pass
        weights = {stage.name: stage.module().state_dict() for stage in trainer.stages}
        torch.save({"weights": weights, "steps": {s.name: s.step for s in trainer.stages}},
                   out / f"{name}.rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    if sys.argv[2:] == ["variants"]:
        variants(out)
        sys.exit()
    pairs, config = setup(sys.argv[2] if len(sys.argv) > 2 else None)
    trainer = Trainer(pairs, config, out / "run", device="cpu")
    first_batch = Batcher(trainer.data.prepared, config, trainer.device, trainer.rank)(0)[0]
    if sys.argv[2:] == ["minutes"] and dist.get_rank() == 1:
        time.sleep(0.5)
    for _ in trainer:
        pass
    locate = trainer.stage("locate")
    locator = locate.locator.state_dict() if locate is not None else {}
    torch.save({"model": trainer.stages[-1].model.state_dict(), "step": trainer.step, "world": dist.get_world_size(),
                "first_batch": first_batch, "locator": locator}, out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
