"""Training a run: its stages in order, each within its share of the budget, a checkpoint after each.

Iterating a :class:`Trainer` yields one :class:`Progress` per step, once the step after it is queued
(:meth:`Stage._reports`: the host never waits for a GPU).  The CLI iterates it with a progress bar;
napari's ``thread_worker`` turns the same generator into progress events and cancellation (closing the
generator saves a checkpoint of every step taken, and logs the one not yet reported).  Under ``torchrun`` it runs
DistributedDataParallel: one process per GPU (NCCL) or CPU process (gloo), each rank drawing its own
quartets, rank 0 alone writing to the run folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..config import InferenceConfig, TrainConfig
from ..core.io import Pair, atomic_write
from ..nn.device import pick_device, pick_precision
from ..training.distributed import broadcast_module, distributed_context, rank_zero_seconds, ranks_agree
from ..training.schedule import Budget
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .registrator import Registrator
from .stages import Progress, Refine, Stage, TrainingData, build_stages, stage_from_state


TRAINING_SET = "training_set.json"  # a run's record of the pairs (and label pairs) it trained on


class Trainer:
    """A training run: set up on construction, iterated for :class:`Progress` reports.

    Construction writes ``config.json`` and :data:`TRAINING_SET` to ``out_dir``; iterating writes ``log.csv``
    and ``checkpoint.pt`` (after each stage, every
    ``config.checkpoint_every`` steps, and when the iteration is closed early, as a GUI's cancel does)
    to ``out_dir``.  With ``resume`` it continues from the folder's checkpoint inside the stage it
    stopped in, drawing the same minibatches an uninterrupted run would have drawn.  ``use``: what the
    run records it is to be registered with (default: the paper's, the network in full).
    ``validator(registrator) -> {"val_tre_mm": ..., "val_dice": ...}`` scores the network's stage every
    ``validate_every`` steps.  ``clock``: seconds from any origin, what a ``minutes`` budget is spent by.

    Once iterated to the end, :attr:`trained` gives each stage's steps and seconds, and :attr:`short` the
    stages a time budget bought fewer steps than they need (:attr:`Stage.needs`); ``config.json`` records
    both.
    """

    def __init__(self, pairs: Sequence[Pair], config: TrainConfig, out_dir: str | os.PathLike, *,
                 use: InferenceConfig | None = None, resume: bool = False, device: str | None = None,
                 validator: Callable[[Registrator], dict] | None = None, validate_every: int = 50,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.validator, self.validate_every, self.clock = validator, validate_every, clock
        self.trained: dict[str, dict] = {}
        self.short: list[str] = []
        dev = pick_device(device)  # under torchrun, this rank's own GPU
        self.rank, self.world = distributed_context(dev)
        precision, self.precision_note = pick_precision(dev, config.precision)
        config = replace(config, precision=precision)  # what runs, and what config.json records
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # the registration grid's shape is the same every step
        self.device, self.config, self.out = dev, config, Path(out_dir)
        self.use = use or InferenceConfig()
        self.data = TrainingData(list(pairs), config, dev, self.rank, self.world)
        torch.manual_seed(config.seed)
        self.stages = build_stages(config)
        self.fitted: list[str] = []
        self.ranks_agree: bool | None = None  # once trained: whether every rank ended with rank 0's weights
        checkpoint = self.out / CHECKPOINT
        if resume and checkpoint.exists():
            self._resume(checkpoint)
        for stage in self.stages:
            stage.clock = clock
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()
            self._record_training_set(pairs)

    def _write_config(self) -> None:
        """``config.json``: the run's settings, and once it has ended what each stage trained."""
        record = self.config.to_dict()
        if self.trained:
            record["trained"] = {"stages": self.trained, "short": self.short}
        text = json.dumps(record, indent=2)
        atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(text))

    def _record_training_set(self, pairs: Sequence[Pair]) -> None:
        """Add ``pairs`` to the run's record of what it trained on (a resumed run may have met others before)."""
        path = self.out / TRAINING_SET
        listing = json.loads(path.read_text()) if path.is_file() else {}
        listing.update({p.name: list(p.label_names) or p.num_labels for p in pairs})
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(listing, indent=1)))

    def _resume(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint)
        names = [s.name for s in self.stages]
        if list(state["config"].stage_budgets()) != names:
            raise ValueError(f"{checkpoint}: the run's stages were {', '.join(state['config'].stage_budgets())}; "
                             f"these settings make {', '.join(names)}")
        saved = state["stages"]["refine"]["config"]["model"]
        if saved != asdict(self.config.model):
            raise ValueError(f"{checkpoint}: network {saved} differs from {self.config.model}")
        self.stages = [stage_from_state(s.name, state["stages"][s.name]) if s.name in state["stages"] else s
                       for s in self.stages]
        self.fitted = [name for name in state["fitted"] if name != names[-1]]
        for stage in self.stages:
            if stage.name in self.fitted:
                stage.hand_on(self.data)

    @property
    def step(self) -> int:
        """The network's steps so far."""
        return self.stages[-1].step

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def checkpoint(self) -> str | None:
        """Write the checkpoint (rank 0 only); returns its path."""
        if self.rank != 0:
            return None
        states = {s.name: s.state_dict() for s in self.stages}
        save_checkpoint(self.out / CHECKPOINT, config=self.config, use=self.use,
                        stages={name: state for name, state in states.items() if state is not None},
                        fitted=self.fitted)
        return str(self.out / CHECKPOINT)

    def registrator(self) -> Registrator:
        """The stages as they are now, registering at the training precision on the training device."""
        use = replace(self.use, precision=self.config.precision, device=str(self.device))
        return Registrator([s for s in self.stages if s.name in self.fitted or s is self.stages[-1]], self.config,
                           use)

    def validate(self) -> dict[str, float]:
        """The validator's figures, with BatchNorm in eval mode for the call."""
        try:
            with torch.no_grad():
                return self.validator(self.registrator())
        finally:
            self.stages[-1].model.train()

    def budget(self, stage: Stage) -> Budget:
        """What is left of the stage's share of the run's budget, timed by rank 0's clock from now."""
        steps, seconds = self.config.stage_budgets()[stage.name]
        clock, start = self.clock, self.clock()
        if seconds is None:  # a budget of steps: each rank's own clock, no collective each step
            return Budget(steps, seconds, lambda: clock() - start, stage.elapsed_s)
        return Budget(steps, seconds, lambda: rank_zero_seconds(clock() - start, self.world), stage.elapsed_s)

    def __iter__(self) -> Iterator[Progress]:
        saved = self._saved_steps()
        try:
            for stage in self.stages:
                if stage.name in self.fitted:
                    continue
                reports = stage.fit(self.data, self.budget(stage), settle=lambda n: self._settles(stage, n))
                try:
                    for report in reports:
                        if report.step % self.config.checkpoint_every == 0:
                            report, saved = replace(report, checkpoint=self.checkpoint()), self._saved_steps()
                        if self._validates(stage, report.step):
                            report = replace(report, **self.validate())
                        if self.rank == 0:
                            _log(self.out, report)
                        yield report
                finally:  # closed (a GUI's cancel) or stopped by an error: the steps taken since are logged too
                    reports.close()
                    unreported = stage.unreported()
                    if self.rank == 0:
                        for report in unreported:
                            _log(self.out, report)
                if stage is not self.stages[-1]:
                    # every rank fitted it alike; on a GPU its kernels need not agree to the bit: rank 0's
                    broadcast_module(stage.module(), self.world, self.device)
                    self.fitted.append(stage.name)
                    stage.optimizer = None  # done: only its weights are kept
                    stage.hand_on(self.data)
                    self.checkpoint()
                    saved = self._saved_steps()
            # under DDP every rank must end with the same weights: checked here, said by the CLI
            self.ranks_agree = all(ranks_agree(s.module(), self.world, self.device) for s in self.stages)
            self._record_trained()
        finally:
            if self._saved_steps() != saved:
                self.checkpoint()
            self.stages[-1].net = None  # the DDP wrapper holds the process group's work: let it go with the run

    def _record_trained(self) -> None:
        """Each stage's steps and seconds; the stages a time budget left short of the steps they need."""
        budgets = self.config.stage_budgets()
        self.trained = {s.name: {"steps": s.step, "seconds": round(s.elapsed_s, 1), "needs": s.needs}
                        for s in self.stages}
        self.short = [s.name for s in self.stages
                      if budgets[s.name][1] and s.step < s.needs and (budgets[s.name][0] or s.needs) >= s.needs]
        if self.rank == 0:
            self._write_config()

    def _validates(self, stage: Stage, step: int) -> bool:
        return isinstance(stage, Refine) and self.validator is not None and step % self.validate_every == 0

    def _settles(self, stage: Stage, step: int) -> bool:
        """Whether step ``step``'s report is needed before the next step: the run checkpoints or validates there."""
        return step % self.config.checkpoint_every == 0 or self._validates(stage, step)

    def _saved_steps(self) -> tuple:
        return tuple(self.fitted), tuple(s.step for s in self.stages)


def train(pairs: Sequence[Pair], config: TrainConfig, out_dir: str | os.PathLike, *, use: InferenceConfig | None = None,
          resume: bool = False, device: str | None = None, validator=None) -> Iterator[Progress]:
    """Train on ``pairs``, yielding a :class:`Progress` per step (see :class:`Trainer`)."""
    return iter(Trainer(pairs, config, out_dir, use=use, resume=resume, device=device, validator=validator))


def _log(out: Path, report: Progress) -> None:
    path = out / "log.csv"
    new = not path.exists()
    with open(path, "a") as fh:
        if new:
            fh.write(f"{LOG_COLUMNS}\n")
        val = "" if report.val_tre_mm is None else f"{report.val_tre_mm:.4g},{report.val_dice:.4g}"
        lr = "" if report.lr is None else f"{report.lr:.6g}"
        fh.write(f"{report.stage},{report.step},{report.loss:.6g},{report.similarity:.6g},{report.regulariser:.6g},"
                 f"{report.elapsed_s:.3f},{report.step_s:.3f},{val or ','}"
                 f"{',' + lr if new or _has_lr(path) else ''}\n")


LOG_COLUMNS = "stage,step,loss,similarity,regulariser,elapsed_s,step_s,val_tre_mm,val_dice,lr"


def _has_lr(path: Path) -> bool:
    """Whether a log has the ``lr`` column (a run begun before it was logged goes on without it)."""
    with open(path) as fh:
        return fh.readline().rstrip("\n") == LOG_COLUMNS
