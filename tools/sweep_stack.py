"""What a sweep costs when its settings train as one stack (issue 10, "cheap enough to run").

For each dataset: the wall time of one 5-seed adVAE stack (the paper's Table 2 settings) and of one
25-member stack (5 values of m_x x 5 seeds, the way the runner groups a sweep), both on one torch
thread at a fixed small n_iter, and their ratio (target: at most 2). With --profile, the top
operators of each stack by self CPU time (torch.profiler), to see where the time goes.

    python tools/sweep_stack.py [--datasets cardio,optdigits] [--n-iter 300] [--repeats 3] [--profile]
                                [--compile]

With --compile, the compiled training step (engine/compiled.py), timed over its calls after the first
(the first traces the graph and loads it from inductor's cache, which a warm-up fit filled).

Numbers depend on the machine and its load: the machine line is printed with them.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.execution import config  # noqa: E402
from bench.evaluation import data
from bench.evaluation.data import REPO_ROOT  # noqa: E402
from bench.evaluation.protocols import make_split  # noqa: E402
from engine import compiled  # noqa: E402
from methods.advae import AdVAE  # noqa: E402

M_X = (0.5, 1.0, 1.5, 2.0, 2.5)  # the paper's Figure 9 (d) values


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()}), 1 thread, load average "
            f"{' '.join(f'{x:.2f}' for x in load)}")


COMPILE = False


def stack(params: dict, n_iter: int, settings) -> list[AdVAE]:
    return [AdVAE(**{**params, **s}, n_iter=n_iter, L=10, random_state=seed, compile=COMPILE)
            for s in settings for seed in range(5)]


def timed(dets, X) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one fit_group; compiled: of its n_iter
    iterations at the steady state's rate."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = AdVAE.fit_group(dets, [X] * len(dets))
    seconds = (time.perf_counter() - t0, time.process_time() - c0)
    bad = [o for o in out if isinstance(o, Exception)]
    if bad:
        raise SystemExit(f"a member failed: {bad[0]}")
    if COMPILE:
        step = compiled.last_step()
        n = int(dets[0].n_iter)
        seconds = (step.wall / (step.calls - 1) * n, step.cpu / (step.calls - 1) * n)
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="cardio,optdigits")
    p.add_argument("--n-iter", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    p.add_argument("--profile", action="store_true", help="print the top operators of each stack")
    p.add_argument("--compile", action="store_true", help="time the compiled training step")
    a = p.parse_args(argv)
    global COMPILE
    COMPILE = a.compile
    torch.set_num_threads(1)  # as the runner gives each group
    exp = config.load(REPO_ROOT / "configs" / "paper.toml")
    print(machine())
    print(f"{'compiled' if COMPILE else 'eager'} training step; n_iter = {a.n_iter}, best of {a.repeats}; 25 members = m_x in {list(M_X)} x seeds 0-4")
    print("wall s and CPU s (this process; less sensitive to a shared machine's load) of one fit_group")
    print(f"{'dataset':10s} {'5 seeds s':>10s} {'25 members s':>13s} {'ratio':>6s} {'CPU 5 s':>8s} "
          f"{'CPU 25 s':>9s} {'CPU ratio':>9s} {'CPU ms/it (5, 25)':>18s}")
    for name in [d.strip() for d in a.datasets.split(",") if d.strip()]:
        split = make_split(data.load(name), "paper")
        params = exp.params_for("advae", name)
        AdVAE(**params, n_iter=20, L=10).fit(split.X_train)  # warm-up: one-time costs not counted
        if COMPILE:  # fill inductor's cache for both shapes
            timed(stack(params, 20, [{}]), split.X_train)
            timed(stack(params, 20, [{"m_x": v} for v in M_X]), split.X_train)
        five = stack(params, a.n_iter, [{}])
        sweep = stack(params, a.n_iter, [{"m_x": v} for v in M_X])
        r5 = [timed(stack(params, a.n_iter, [{}]), split.X_train) for _ in range(a.repeats)]
        r25 = [timed(stack(params, a.n_iter, [{"m_x": v} for v in M_X]), split.X_train)
               for _ in range(a.repeats)]
        (t5, c5), (t25, c25) = min(r5), min(r25)
        c5, c25 = min(c for _, c in r5), min(c for _, c in r25)
        print(f"{name:10s} {t5:10.2f} {t25:13.2f} {t25 / t5:6.2f} {c5:8.2f} {c25:9.2f} {c25 / c5:9.2f} "
              f"{1e3 * c5 / a.n_iter:8.2f} {1e3 * c25 / a.n_iter:9.2f}")
        if a.profile:
            from torch.profiler import ProfilerActivity, profile

            for label, dets in (("5 seeds", five), ("25 members", sweep)):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    AdVAE.fit_group(dets, [split.X_train] * len(dets))
                print(f"--- {name}, {label}: top operators by self CPU time")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
