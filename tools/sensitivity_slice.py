"""What configs/sensitivity.toml (600 adVAE fits) costs, from a slice run through the runner.

Prints the groups the runner forms for the whole grid, then runs the grid restricted to the given
datasets at a small ``--n-iter`` (one worker, into a scratch directory) and extrapolates: training
time scales with the iterations (x 20000 / n_iter, the paper's budget), scoring (L = 1000 samples per
row, train and test rows) does not. The estimate for the whole grid assumes the other datasets cost
what the measured ones cost on average, and two workers that split the groups evenly.

    python tools/sensitivity_slice.py [--datasets cardio] [--n-iter 200]
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.execution import config, plan, runner  # noqa: E402
from bench.execution.config import Override  # noqa: E402
from bench.evaluation.data import REPO_ROOT  # noqa: E402
from bench.execution.store import Store  # noqa: E402

FULL_ITERATIONS = 20000


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="cardio")
    p.add_argument("--n-iter", type=int, default=200)
    a = p.parse_args(argv)
    from sweep_stack import machine  # the same machine line

    full = config.load(REPO_ROOT / "configs" / "sensitivity.toml")
    groups = plan.make_groups(plan.expand(full))
    sizes = sorted({len(g) for g in groups})
    print(machine())
    print(f"sensitivity.toml: {sum(map(len, groups))} runs in {len(groups)} groups (sizes {sizes}), "
          f"{len(full.datasets)} datasets")
    names = [d.strip() for d in a.datasets.split(",") if d.strip()]
    exp = full.restrict(datasets=names)
    exp = dataclasses.replace(exp, overrides=exp.overrides + (
        Override(("advae",), tuple(exp.datasets), {"n_iter": a.n_iter}),))
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), cpu_seconds()
        counts = runner.run_experiment(exp, out, workers=1, progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        store = Store(out)
        df = store.frame()
        store.close()
    if counts["failed"]:
        print(f"{counts['failed']} runs failed")
        return 1
    fit = float((df["fit_seconds"]).sum())  # per member = its group's time / size: sums to group time
    score = float(df["score_seconds"].sum())
    other = wall - fit - score
    full_one = fit * FULL_ITERATIONS / a.n_iter + score + other
    per_dataset = full_one / len(names)
    grid = per_dataset * len(full.datasets)
    print(f"slice: {', '.join(names)}: {len(df)} runs in {len(df.groupby('group_size'))} group size(s) "
          f"{sorted(df['group_size'].unique().tolist())}, n_iter = {a.n_iter}: wall {wall:.1f} s "
          f"(CPU {cpu:.1f} s): training {fit:.1f} s, scoring {score:.1f} s, rest {other:.1f} s")
    print(f"extrapolated to {FULL_ITERATIONS} iterations: {full_one / 60:.1f} min for the slice on one "
          f"worker; whole grid ({len(full.datasets)} datasets) ~ {grid / 60:.1f} min on one worker, "
          f"~ {grid / 120:.1f} min on two (wall time on this machine's current load)")
    share = cpu / wall
    print(f"the slice got {share:.0%} of a core; at a full core per worker: whole grid "
          f"~ {grid * share / 120:.1f} min on two workers")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
