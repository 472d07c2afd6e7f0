"""Frozen configuration dataclasses, saved with every checkpoint.

A run is fully described by one :class:`TrainConfig`; ``to_dict`` /
``from_dict`` give the plain-JSON form stored in checkpoints and run folders.
Named presets collect the paper's settings and the CPU-friendly defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace

from .core.geometry import CONVENTIONS

# the glands a registration may be fitted to at its end (Registrator.register_pair, evaluate's and crossval's --glands)
GLAND_CHOICES = ("none", "given", "predicted", "moving-given")

VARIANTS = ("baseline", "delta0", "delta1-4", "global", "composite")
SIMILARITIES = ("msdice", "msce")
REGULARISERS = ("bending", "l2")
PRECISIONS = ("bf16", "fp32")
SCHEDULES = ("constant", "cosine")
LABEL_SAMPLING = ("one", "all")


@dataclass(frozen=True)
class ModelConfig:
    """Network: ``variant`` (see :data:`VARIANTS`) and first-level width n0."""

    variant: str = "baseline"
    width: int = 32

    def __post_init__(self) -> None:
        _choice("variant", self.variant, VARIANTS)
        if self.width < 1:
            raise ValueError(f"width must be positive, got {self.width}")


@dataclass(frozen=True)
class LossConfig:
    """Label similarity across Gaussian scales (mm) plus a weighted regulariser.

    ``prefilter`` is the paper's "preFilt" variant: labels are filtered at every
    scale before training and the filtered maps are warped.
    """

    similarity: str = "msdice"
    scales_mm: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    regulariser: str = "bending"
    weight: float = 0.5
    prefilter: bool = False
    # weight of a penalty on folding (see nn.losses.folding) of the whole DDF; 0 = the paper
    folding: float = 0.0

    def __post_init__(self) -> None:
        _choice("similarity", self.similarity, SIMILARITIES)
        _choice("regulariser", self.regulariser, REGULARISERS)
        object.__setattr__(self, "scales_mm", tuple(float(s) for s in self.scales_mm))
        if not self.scales_mm or min(self.scales_mm) < 0:
            raise ValueError(f"scales_mm must be non-negative and non-empty, got {self.scales_mm}")
        if self.weight < 0 or self.folding < 0:
            raise ValueError(f"regulariser and folding weights must be >= 0, got {self.weight}, {self.folding}")


@dataclass(frozen=True)
class AugmentConfig:
    """Random affine per quartet (no flips): ranges of the uniform draws."""

    enabled: bool = True
    rotation_deg: float = 5.0
    scale: float = 0.05
    shear: float = 0.02
    translation_mm: float = 3.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    geometry: str = "world"
    spacing_mm: float | None = None  # network grid voxel size; None = the fixed grid
    learning_rate: float = 1e-5
    batch_size: int = 4
    iterations: int | None = 1000
    minutes: float | None = None
    seed: int = 0
    precision: str = "bf16"
    checkpoint_every: int = 100
    # learning rate over the budget: "constant" (the paper) or "cosine" (decays to 0 at the budget's end)
    schedule: str = "constant"
    # second sampling stage: "one" label pair per image pair (the paper), or "all" of the pair's label
    # pairs averaged: the exact inner expectation of the paper's Eq. 3 (same objective, lower variance)
    label_sampling: str = "one"
    # The registration's stages (pipeline/stages.py) and their shares of the budget, steps or minutes alike;
    # the network (Refine) has the rest.  locator > 0: a Locate stage first (the gland segmenters), and the
    # network starts from the gland centroids: true ones in training, located ones at registration.
    # prior > 0: a Prior stage after it, the training pairs' mean deformation about the gland centroid, learnt
    # image-independently by the same loss, to which the network adds its DDF (it needs the located gland).
    # 0 and 0 = the paper: one stage
    locator: float = 0.0
    prior: float = 0.0

    def __post_init__(self) -> None:
        _choice("precision", self.precision, PRECISIONS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("label_sampling", self.label_sampling, LABEL_SAMPLING)
        if self.geometry not in CONVENTIONS:
            raise ValueError(f"geometry must be world, centred or fov, got {self.geometry!r}")
        if self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("batch_size must be >= 1 and learning_rate > 0")
        if self.iterations is None and self.minutes is None:
            raise ValueError("give a budget: iterations or minutes")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be a positive number of steps, got {self.iterations}")
        if self.minutes is not None and not 0 < self.minutes < float("inf"):  # not: NaN too
            raise ValueError(f"minutes must be positive and finite, got {self.minutes:g}")
        if not 0.0 <= self.locator < 1.0:
            raise ValueError(f"locator must be a share of the budget in [0, 1), got {self.locator}")
        if not 0.0 <= self.prior < 1.0 - self.locator:
            raise ValueError(f"prior must be a share of the budget in [0, 1 - locator), got {self.prior}")
        if self.prior and not self.locator:
            raise ValueError("a gland prior needs a gland locator (locator > 0): it sits on the located gland")
        if self.spacing_mm is not None and self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def stage_budgets(self) -> dict[str, tuple[int | None, float | None]]:
        """``{stage: (steps, seconds)}`` in training order: each stage's share of the iterations (the
        network takes what the others leave, so they add up) and of the minutes."""
        shares = {k: v for k, v in (("locate", self.locator), ("prior", self.prior)) if v}
        shares["refine"] = 1.0 - self.locator - self.prior
        steps = dict.fromkeys(shares)
        if self.iterations:
            steps = {k: round(v * self.iterations) for k, v in shares.items()}
            steps["refine"] = self.iterations - sum(n for k, n in steps.items() if k != "refine")
        return {k: (steps[k], None if self.minutes is None else 60.0 * self.minutes * v) for k, v in shares.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = _without_removed_settings(data)
        nested = {"model": ModelConfig, "loss": LossConfig, "augment": AugmentConfig}
        for key, kind in nested.items():
            if key in data:
                data[key] = kind(**data[key])
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)


# settings removed because their benchmarks showed no gain (benchmarks/HISTORY.md): a config that
# used them at their neutral value still loads; one that relied on them is refused by name.  Neutral
# None: a setting that only shaped the training, dropped (the run's weights register as they did)
REMOVED = {("members",): (1, "--members (averaged networks)"),
           ("augment", "elastic_mm"): (0.0, "--elastic (elastic augmentation)"),
           ("augment", "elastic_grid_mm"): (None, ""),
           ("cross_subject",): (None, "")}


def _without_removed_settings(data: dict) -> dict:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for path, (neutral, option) in REMOVED.items():
        holder = data
        for key in path[:-1]:
            holder = holder.get(key, {})
        if path[-1] in holder:
            value = holder.pop(path[-1])
            if neutral is not None and value != neutral:
                raise ValueError(f"the run uses {option} = {value}, a setting this version no longer has; "
                                 "retrain it without")
    return data


@dataclass(frozen=True)
class InferenceConfig:
    """How a trained run registers: what a run records it was trained to be used with, and the machine's choices.

    ``network_weight``: the network's DDF enters scaled by it (the located shift and the gland prior in full).
    0.5 is the plain average of the population's prior and the subject-specific network on top of it: on 66
    training pairs the network's interior deformation helps some pairs and harms others, and the average kept
    most of its gains at less of its cost (benchmarks/README.md).  1 = the paper.  ``precision``: bf16
    autocast (fast, within 0.01 mm of fp32) or fp32.  ``device``: None picks CUDA when there is one.
    """

    network_weight: float = 1.0
    precision: str = "bf16"
    device: str | None = None

    def __post_init__(self) -> None:
        _choice("precision", self.precision, PRECISIONS)
        if not 0.0 <= self.network_weight <= 1.0:
            raise ValueError(f"network_weight must be in [0, 1], got {self.network_weight}")

    def to_dict(self) -> dict:
        """What a run records: the weight (the precision and device are the registering machine's)."""
        return {"network_weight": self.network_weight}


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


PRESETS: dict[str, TrainConfig] = {
    # Hu et al. 2018, section 3.2.1: n0=32, Adam 1e-5, batch 4, alpha 0.5, fp32.
    "paper": TrainConfig(precision="fp32"),
    # What generalises furthest within 30 CPU minutes (benchmarks/README.md): a narrower net on a
    # 3 mm grid in bf16, a larger step size decayed by a cosine over the budget, every label pair of
    # a drawn image pair in the loss instead of one, wider affine augmentation (10 degrees, 10%
    # scaling), 30% of the budget for a gland locator that starts the registration from the located
    # glands' centroids, 5% for a gland prior, the training pairs' mean deformation about the gland, under the network's, and a
    # penalty on folding (a run fell into a folded field without it); registration with half the
    # network's DDF on top of the prior (USE below).
    "cpu": TrainConfig(model=ModelConfig(width=16), spacing_mm=3.0, learning_rate=3e-4, schedule="cosine",
                       label_sampling="all", locator=0.3, prior=0.05,
                       loss=LossConfig(folding=1.0), augment=AugmentConfig(rotation_deg=10.0, scale=0.1, shear=0.05)),
}


# what a run of each preset records it is to be used with
USE: dict[str, InferenceConfig] = {"paper": InferenceConfig(), "cpu": InferenceConfig(network_weight=0.5)}


def preset(name: str, **overrides) -> TrainConfig:
    """A named preset with top-level fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
