"""What a one-dataset sweep costs a user, end to end through the runner (issue 10, "cheap enough to run").

Two experiments on one dataset, each into a fresh scratch directory, with ``--workers`` local worker
processes (default: one per core): adVAE at the paper's settings for seeds 0-4 (one 5-seed stack,
halved over two workers when there are two), and a sweep of m_x over the paper's Figure 9 (d) values
x seeds 0-4 (25 members: one stack of 25 on one worker, 13 + 12 on two). Prints the wall time of each
(training, scoring, storing, everything a `run` does), the CPU time of the workers, and the ratio.
Training at ``--n-iter`` iterations (the paper's 20000 by default; fewer for a quick look).

    python tools/sweep_runner.py [--dataset cardio] [--n-iter 20000] [--workers 2]

Numbers depend on the machine and its load: the machine line is printed with them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.execution import config, plan, runner  # noqa: E402
from bench.execution.config import Override  # noqa: E402
from bench.evaluation.data import REPO_ROOT  # noqa: E402

M_X = (0.5, 1.0, 1.5, 2.0, 2.5)  # the paper's Figure 9 (d) values


def timed_run(exp, workers: int) -> tuple[float, float, list[int]]:
    """(wall s, CPU s of the groups, group sizes) of one `run` of ``exp`` into a scratch directory."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        counts = runner.run_experiment(exp, out, workers=workers, progress=False)
        wall = time.perf_counter() - t0
        if counts["failed"]:
            raise SystemExit(f"{counts['failed']} runs failed")
        import json

        lines = [json.loads(s) for s in (Path(out) / plan.EXECUTIONS).read_text().splitlines()]
    return wall, sum(x["cpu_seconds"] for x in lines), sorted((len(x["seeds"]) for x in lines),
                                                              reverse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="cardio")
    p.add_argument("--n-iter", type=int, default=20000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    from sweep_stack import machine  # the same machine line

    paper = config.load(REPO_ROOT / "configs" / "paper.toml").restrict(methods=["advae"],
                                                                        datasets=[a.dataset])
    paper = dataclasses.replace(paper, overrides=paper.overrides + (
        Override(("advae",), (a.dataset,), {"n_iter": a.n_iter}),))
    sweep = dataclasses.replace(paper, methods=tuple(f"advae[m_x={v}]" for v in M_X))
    print(machine().replace("1 thread", f"{a.workers} worker(s) of 1 thread"))
    print(f"{a.dataset}, n_iter = {a.n_iter}, seeds 0-4, through the runner (fit, score, store)")
    w5, c5, g5 = timed_run(paper, a.workers)
    w25, c25, g25 = timed_run(sweep, a.workers)
    print(f"{'experiment':34s} {'groups':>10s} {'wall s':>8s} {'CPU s':>8s}")
    print(f"{'advae, 5 seeds':34s} {'+'.join(map(str, g5)):>10s} {w5:8.1f} {c5:8.1f}")
    print(f"{'advae m_x x 5 values, 5 seeds':34s} {'+'.join(map(str, g25)):>10s} {w25:8.1f} {c25:8.1f}")
    print(f"ratio (25 members / 5 seeds): wall {w25 / w5:.2f}, CPU {c25 / c5:.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
