"""GPU smoke test: does training and registration work on this machine's CUDA GPUs, and where does a step go?

    python benchmarks/gpu_smoke.py                 # on CUDA (every visible GPU for the DDP part)
    python benchmarks/gpu_smoke.py --device cpu    # the same checks on the CPU: a dry run of the script

Prints, in a few minutes on one GPU: versions and compute capability; every variant trained a few steps
(loss, step time, the precision chosen); the same checkpoint registered on the device and on the CPU in fp32
(largest DDF difference, mm); one step's time split between building the batch and the step itself; how
often training makes the host wait for the GPU (CUDA's sync debug mode); and DistributedDataParallel on every visible GPU (2 gloo ranks with ``--device cpu``), ending with identical
weights on all ranks or not.  Tiny phantoms and a narrow network: it checks the machinery, not the speed of
a real run (benchmarks/speed.py does that).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from napari_labelreg.config import ModelConfig, TrainConfig
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.nn.device import pick_device, pick_precision
from napari_labelreg.pipeline.registrator import Registrator
from napari_labelreg.pipeline.train import Trainer
from napari_labelreg.training.refine import Batcher, compute_loss

VARIANTS = ("baseline", "delta0", "delta1-4", "global", "composite")
SHAPE = (48, 56, 40)


def pairs(n: int = 4):
    return [make_phantom(s, fixed_shape=SHAPE, moving_shape=(52, 52, 44), spacing=1.5).pair for s in range(n)]


def config(variant: str = "baseline", steps: int = 5) -> TrainConfig:
    return TrainConfig(model=ModelConfig(variant=variant, width=8), geometry="centred", iterations=steps,
                       batch_size=2, precision="bf16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions(device: torch.device) -> None:
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    if device.type == "cuda":
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            memory = torch.cuda.get_device_properties(i).total_memory / 2**30
            print(f"  cuda:{i} {torch.cuda.get_device_name(i)}, compute capability {major}.{minor}, {memory:.0f} GiB")
    precision, why = pick_precision(device, "bf16")
    print(f"  --precision bf16 runs in {precision}{f' ({why})' if why else ''}")


def variants(device: torch.device, data, out: Path) -> Path:
    print("every variant, 5 steps (from zero-initialised heads: the loss need not fall yet):")
    for variant in VARIANTS:
        trainer = Trainer(data, config(variant), out / variant, device=str(device))
        start = time.perf_counter()
        reports = list(trainer)
        sync(device)
        took = time.perf_counter() - start
        print(f"  {variant:10s} loss {reports[0].loss:.4f} -> {reports[-1].loss:.4f}, {took / len(reports):.3f} s/step, "
              f"{trainer.config.precision}")
    return out / "baseline"


def agreement(device: torch.device, data, run: Path) -> None:
    registrator = Registrator.from_run(run, device=str(device))
    here = registrator.register(data[0].moving, data[0].fixed)
    cpu = Registrator.from_run(run, device="cpu", precision="fp32").register(data[0].moving, data[0].fixed)
    print(f"same checkpoint, {device} ({registrator.use.precision}) against the CPU in fp32: largest DDF "
          f"difference {abs(here.ddf_mm - cpu.ddf_mm).max():.4f} mm")


def split(device: torch.device, data) -> None:
    cfg = config()
    trainer = Trainer(data, cfg, tempfile.mkdtemp(), device=str(device))
    list(trainer)  # warm: cuDNN's algorithm search, allocations
    refine, prepared = trainer.stages[-1], trainer.data.prepared
    batcher = Batcher(prepared, trainer.config, trainer.device)
    optimizer = torch.optim.Adam(refine.model.parameters(), lr=1e-5)
    batch_s = step_s = 0.0
    for step in range(10):
        sync(device)
        t0 = time.perf_counter()
        batch = batcher(step)
        sync(device)
        t1 = time.perf_counter()
        loss, _, _ = compute_loss(refine.model, batch, trainer.data.similarity, trainer.data.regulariser,
                                  cfg.loss.weight, trainer.device, trainer.config.precision)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync(device)
        batch_s, step_s = batch_s + t1 - t0, step_s + time.perf_counter() - t1
    print(f"one step: building the batch {batch_s / 10 * 1e3:.1f} ms, the step (forward, loss, backward, Adam) "
          f"{step_s / 10 * 1e3:.1f} ms")


def waits(device: torch.device, data) -> None:
    """How often the host waits for the GPU while training: CUDA's sync debug mode counts every such wait
    (reading a step's figures through an event, once the next step is queued, is not one)."""
    if device.type != "cuda":
        print("host waits for the GPU: counted on CUDA only (sync debug mode)")
        return
    import warnings

    run = iter(Trainer(data, replace(config(steps=12), checkpoint_every=100), tempfile.mkdtemp(), device=str(device)))
    next(run)  # the first steps: cuDNN's algorithm search, the optimiser's state
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            steps = sum(1 for _ in zip(range(8), run))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    list(run)
    found = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]
    print(f"host waits for the GPU: {len(found)} in {steps} steps (0 expected){': ' + found[0] if found else ''}")


def ddp(device: torch.device, out: Path) -> None:
    ranks = torch.cuda.device_count() if device.type == "cuda" else 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", "29531",
           __file__, "--ddp-worker", str(out), "--device", device.type]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(f"DDP on {ranks} {device.type} ranks FAILED:\n{done.stderr[-3000:]}")
        return
    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(ranks)]
    same = all(torch.equal(w[k], weights[0][k]) for w in weights[1:] for k in w
               if "running_" not in k and "num_batches" not in k)
    print(f"DDP on {ranks} {device.type} ranks: {time.perf_counter() - start:.1f} s with start-up, every variant "
          f"trained; the baseline's weights {'identical' if same else 'DIFFER'} on all ranks")


def ddp_worker(out: Path, device: str) -> None:
    import torch.distributed as dist

    data = pairs(2)
    for variant in VARIANTS:
        trainer = Trainer(data, replace(config(variant, 3), batch_size=1), out / variant, device=device)
        list(trainer)
        if variant == "baseline":
            torch.save({k: v.cpu() for k, v in trainer.stages[-1].model.state_dict().items()},
                       out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run)")
    parser.add_argument("--ddp-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_worker:
        ddp_worker(Path(args.ddp_worker), args.device)
        return
    try:
        device = pick_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"gpu_smoke: {exc}") from None
    out = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    start = time.perf_counter()
    versions(device)
    data = pairs()
    run = variants(device, data, out)
    agreement(device, data, run)
    split(device, data)
    waits(device, data)
    ddp(device, out / "ddp")
    print(json.dumps({"device": str(device), "minutes": round((time.perf_counter() - start) / 60, 2)}))


if __name__ == "__main__":
    main()
