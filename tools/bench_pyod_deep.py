"""Side by side: this suite's deep detectors against the ones a user would otherwise pick from PyOD,
trained on the same rows for the same number of mini-batch iterations, in one run.

    python tools/bench_pyod_deep.py [--datasets cardio,optdigits] [--epochs 5] [--seeds 5] [--csv FILE]

PyOD's AutoEncoder, VAE and DeepSVDD run at their defaults except batch_size (128, ours) and the
number of epochs; an epoch is ceil(n / 128) iterations (DeepSVDD trains on 90 % of the rows: its
validation split). Ours: AE and VAE on adVAE's backbone, trained for the same iteration count, alone
(1 member) and as a stack of --seeds members (per member = the stack's time / members). Each kind of
fit is warmed up once on a few rows before the timed ones. Every fit runs
with one torch thread and one BLAS thread, as the runner runs them. Times are of ``fit`` (PyOD's also
scores the training rows once; ours do not), wall and CPU, in ms per iteration. The last columns are
ratios, PyOD's ms per iteration over ours per member: > 1 means ours is faster. A machine line with
the load average comes first: a timing taken while other work ran is an upper bound.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from bench.contract import registry  # noqa: E402
from bench.evaluation import data  # noqa: E402
from bench.evaluation.protocols import make_split  # noqa: E402

BATCH = 128


def _timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def pyod_fits(X: np.ndarray, epochs: int) -> dict[str, tuple[int, float, float]]:
    """name -> (iterations, wall s, cpu s) of PyOD's AutoEncoder, VAE and DeepSVDD."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.deep_svdd import DeepSVDD
    from pyod.models.vae import VAE

    n, d = X.shape
    out = {}
    for name, make, rows in (
            ("pyod AutoEncoder", lambda: AutoEncoder(epoch_num=epochs, batch_size=BATCH, verbose=0), n),
            ("pyod VAE", lambda: VAE(epoch_num=epochs, batch_size=BATCH, verbose=0), n),
            ("pyod DeepSVDD", lambda: DeepSVDD(n_features=d, epochs=epochs, batch_size=BATCH, verbose=0,
                                                random_state=0), int(n * 0.9))):
        det = make()
        wall, cpu = _timed(lambda: det.fit(X))
        out[name] = (epochs * math.ceil(rows / BATCH), wall, cpu)
    return out


def our_fits(X: np.ndarray, spec: str, iterations: int, members: int) -> tuple[float, float]:
    """(wall s, cpu s) of one fit_group of ``members`` seeds of ``spec`` for ``iterations``."""
    dets = [registry.build(spec, {"n_iter": iterations, "random_state": s})[0] for s in range(members)]
    wall, cpu = _timed(lambda: type(dets[0]).fit_group(dets, [X] * members))
    return wall, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="cardio,optdigits")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seeds", type=int, default=5, help="members of our stacks (default: %(default)s)")
    p.add_argument("--csv", help="also write the rows to this CSV file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, 1 thread per fit; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    rows = []
    with threadpool_limits(limits=1):
        for name in a.datasets.split(","):
            X = make_split(data.load(name), "paper", 0).X_train.astype(np.float32)
            pyod_fits(X[:BATCH * 2], 1)  # warm-up, untimed: imports, first kernels, allocator
            for spec in ("ae", "vae"):
                our_fits(X[:BATCH * 2], spec, 2, 1)
            for det, (iters, wall, cpu) in pyod_fits(X, a.epochs).items():
                rows.append((name, det, 1, iters, 1e3 * wall / iters, 1e3 * cpu / iters))
            iters = a.epochs * math.ceil(len(X) / BATCH)
            for spec in ("ae", "vae"):
                for members in sorted({1, a.seeds}):
                    wall, cpu = our_fits(X, spec, iters, members)
                    rows.append((name, f"ours {spec}", members, iters, 1e3 * wall / iters / members,
                                 1e3 * cpu / iters / members))
    print(f"{'dataset':<10} {'detector':<18} {'members':>7} {'iters':>6} {'ms/iter/member wall':>20} "
          f"{'cpu':>8}")
    for r in rows:
        print(f"{r[0]:<10} {r[1]:<18} {r[2]:>7} {r[3]:>6} {r[4]:>20.3f} {r[5]:>8.3f}")
    print("\nratios, PyOD's CPU ms per iteration over ours per member (> 1: ours is faster):")
    for name in a.datasets.split(","):
        ours = {(r[1], r[2]): r[5] for r in rows if r[0] == name and r[1].startswith("ours")}
        for det in ("pyod AutoEncoder", "pyod VAE", "pyod DeepSVDD"):
            theirs = next(r[5] for r in rows if r[0] == name and r[1] == det)
            mine = "ours vae" if "VAE" in det else "ours ae"
            print(f"  {name:<10} {det:<18} / {mine}: " + ", ".join(
                f"{theirs / ours[(mine, m)]:.1f}x ({m} member{'s' if m > 1 else ''})"
                for m in sorted({1, a.seeds})))
    if a.csv:
        import csv

        with open(a.csv, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["dataset", "detector", "members", "iterations", "ms_per_iter_member_wall",
                        "ms_per_iter_member_cpu"])
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
