"""Training and registration that share the CPU, under each OpenMP wait policy, in one run.

For each policy: the median training step of ``napari-labelreg demo --iterations N`` alone and with 2 and 3
runs side by side; the wall time of ``napari-labelreg evaluate`` on 20 phantom pairs alone and 2 side by
side; then (``--minutes M``, the chosen policy) the steps a ``train --minutes M`` run takes alone and 2 side
by side, against a fair share (half of the alone run's).  Alone steps are repeated, policies alternating,
for a paired ratio.  The machine must be otherwise idle.  The last line is one JSON object.

    python benchmarks/shared_cpu.py [--iterations 15] [--repeats 3] [--minutes 5] [--policies today passive]

``fixed``: a thread per core throughout (the behaviour before napari_labelreg.nn.threads); ``share``: the
default, threads sized to the cores the rest of the machine leaves free; ``passive`` and ``spin10k``: a
thread per core, OpenMP's idle threads sleeping at once or after 10,000 spins (libgomp's default: 300,000).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORES = len(os.sched_getaffinity(0))
POLICIES = {  # the environment each policy runs in (the variables named here removed first)
    "fixed": {"OMP_NUM_THREADS": str(CORES)},  # a thread per core throughout: the behaviour before CoreShare
    "share": {},  # the default: CoreShare sizes the threads to the cores the machine leaves free
    "passive": {"OMP_NUM_THREADS": str(CORES), "OMP_WAIT_POLICY": "PASSIVE"},  # idle threads sleep at once
    "spin10k": {"OMP_NUM_THREADS": str(CORES), "GOMP_SPINCOUNT": "10000"},  # spin briefly, then sleep
}
NAMED = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
CLI = [sys.executable, "-m", "napari_labelreg"]


def environment(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NAMED}
    return {**env, **POLICIES[policy]}


def side_by_side(commands: list[list[str]], env: dict[str, str]) -> list[float]:
    """Start ``commands`` together; each one's wall time (s) once all have ended."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    ended = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{' '.join(proc.args)} failed: {err.strip().splitlines()[-1:]}")
        ended.append(time.perf_counter() - start)
    return ended


def logged_steps(run: Path) -> list[dict]:
    with open(run / "log.csv") as fh:
        return list(csv.DictReader(fh))


def median_step(run: Path, skip: int = 2) -> float:
    """The median step time (s) of a run's log, the first ``skip`` steps (warm-up) left out."""
    return statistics.median(float(r["step_s"]) for r in logged_steps(run)[skip:])


def demo_steps(policy: str, runs: int, iterations: int, tmp: Path) -> list[float]:
    outs = [Path(tempfile.mkdtemp(dir=tmp)) / "demo" for _ in range(runs)]
    side_by_side([[*CLI, "demo", "--device", "cpu", "--iterations", str(iterations), "--out", str(o)]
                  for o in outs], environment(policy))
    return [median_step(o / "run") for o in outs]


def evaluate_times(policy: str, runs: int, model: Path, data: Path, tmp: Path) -> list[float]:
    return side_by_side([[*CLI, "evaluate", "--device", "cpu", "--model", str(model), "--data", str(data),
                          "--geometry", "centred", "--out", str(tmp / f"eval{i}.csv")] for i in range(runs)],
                        environment(policy))


def minutes_steps(policy: str, runs: int, minutes: float, data: Path, tmp: Path) -> list[int]:
    outs = [Path(tempfile.mkdtemp(dir=tmp)) / "run" for _ in range(runs)]
    side_by_side([[*CLI, "train", "--device", "cpu", "--data", str(data), "--geometry", "centred",
                   "--minutes", str(minutes), "--out", str(o)] for o in outs], environment(policy))
    return [len(logged_steps(o)) for o in outs]


def write_pairs(root: Path, count: int) -> Path:
    """``count`` phantom pairs in the folder layout ``--data`` reads."""
    import numpy as np

    from napari_labelreg.core import io
    from napari_labelreg.core.phantom import make_phantom

    for seed in range(count):
        pair = make_phantom(seed).pair
        name = f"obs{seed:03d}.nii.gz"
        io.save_volume(root / "moving_images" / name, pair.moving.data, pair.moving.grid)
        io.save_volume(root / "fixed_images" / name, pair.fixed.data, pair.fixed.grid)
        for side, labels, grid in (("moving", pair.moving_labels, pair.moving.grid),
                                   ("fixed", pair.fixed_labels, pair.fixed.grid)):
            io.save_volume(root / f"{side}_labels" / name, labels.transpose(1, 2, 3, 0).astype(np.uint8), grid)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=15, help="demo steps per run (default 15)")
    p.add_argument("--repeats", type=int, default=3, help="alone runs per policy, alternating (default 3)")
    p.add_argument("--minutes", type=float, default=5.0, help="budget of the --minutes runs (0: skip them)")
    p.add_argument("--policies", nargs="+", default=["fixed", "share"], choices=sorted(POLICIES))
    p.add_argument("--shared", nargs="+", type=int, default=[2, 3], help="runs side by side (default 2 3)")
    args = p.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; demo --iterations {args.iterations}", flush=True)
    result: dict = {"cpu": cpu_name(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_pairs(tmp / "pairs", 20)
        alone: dict[str, list[float]] = {policy: [] for policy in args.policies}
        for _ in range(args.repeats):
            for policy in args.policies:
                alone[policy] += demo_steps(policy, 1, args.iterations, tmp)
        for policy in args.policies:
            row = result.setdefault(policy, {})
            row["alone_s"] = statistics.median(alone[policy])
            print(f"{policy:8s} demo step alone: {' '.join(f'{s:.3f}' for s in alone[policy])} s", flush=True)
            for n in args.shared:
                steps = demo_steps(policy, n, args.iterations, tmp)
                row[f"shared{n}_s"] = steps
                print(f"{policy:8s} demo step, {n} side by side: {' '.join(f'{s:.3f}' for s in steps)} s "
                      f"({max(steps) / row['alone_s']:.1f}x alone)", flush=True)
        base = args.policies[0]
        for policy in args.policies[1:]:
            ratios = [b / a for a, b in zip(alone[base], alone[policy])]
            result[policy]["alone_ratio"] = statistics.median(ratios)
            print(f"{policy} / {base} alone, paired: {' '.join(f'{r:.3f}' for r in ratios)} "
                  f"(median {statistics.median(ratios):.3f})", flush=True)

        model = tmp / "model"
        subprocess.run([*CLI, "demo", "--device", "cpu", "--iterations", "4", "--out", str(model)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for policy in args.policies:
            one = evaluate_times(policy, 1, model / "run", data, tmp)
            two = evaluate_times(policy, 2, model / "run", data, tmp)
            result[policy].update(evaluate_alone_s=one[0], evaluate_shared2_s=two)
            print(f"{policy:8s} evaluate 20 pairs: alone {one[0]:.1f} s, 2 side by side "
                  f"{' '.join(f'{t:.1f}' for t in two)} s ({max(two) / one[0]:.1f}x alone)", flush=True)

        if args.minutes > 0:
            policy = args.policies[-1]
            solo = minutes_steps(policy, 1, args.minutes, data, tmp)[0]
            pair = minutes_steps(policy, 2, args.minutes, data, tmp)
            fair = solo / 2
            result[policy].update(minutes_alone_steps=solo, minutes_shared2_steps=pair)
            print(f"{policy:8s} train --minutes {args.minutes:g}: alone {solo} steps, 2 side by side "
                  f"{' '.join(str(n) for n in pair)} ({' '.join(f'{n / fair:.0%}' for n in pair)} of a fair share)",
                  flush=True)
    print(json.dumps(result))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
