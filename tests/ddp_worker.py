"""Run by torchrun from test_distributed.py (not a test module): train, then save this rank's weights.

``worker.py OUT`` trains 3 iterations; ``worker.py OUT minutes`` trains for 6 seconds under a cosine
schedule with rank 1 starting its clock 0.5 s late, as ranks on a busy machine do; ``worker.py OUT
locator`` trains a gland locator for 2 steps first (the ranks share its two sides), then 4 iterations.
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


if __name__ == "__main__":
    out = Path(sys.argv[1])
    pairs, config = setup(sys.argv[2] if len(sys.argv) > 2 else None)
    trainer = Trainer(pairs, config, out / "run")
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
