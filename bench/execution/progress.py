"""What a run of the grid reports while it works and after: the progress bar's position by estimated
work (``WorkProgress``), one line of timings per finished group in ``executions.jsonl``
(``ExecutionLog``), CPU and wall seconds by method (``execution_summary``) and the utilisation line.
"""
from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from pathlib import Path

from bench.execution.plan import EXECUTIONS, Task, _signature


class WorkProgress:
    """Where the progress bar stands: the weights (progress_weights) of the finished groups plus, for
    each group running now, the seconds it has run, at most RUNNING_CREDIT of its weight. Which groups
    run is inferred from the executors' contract (tasks start in the order given): the first ``slots``
    start at once and each finished group frees a slot for the next in order. A ticker thread moves the
    bar every TICK seconds, so a long group advances the bar and its time estimate while it trains."""

    RUNNING_CREDIT = 0.95
    TICK = 2.0

    def __init__(self, bar, tasks: list[Task], weights: dict[int, float], slots: int):
        self.bar, self.weights = bar, weights
        self.queue = [t.index for t in tasks]
        self.slots = max(1, int(slots))
        self.running: dict[int, float] = {}  # task index -> when it started (perf_counter)
        self.done = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = None

    def _fill(self, now: float) -> None:
        while self.queue and len(self.running) < self.slots:
            self.running[self.queue.pop(0)] = now

    def position(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        with self.lock:
            return self.done + sum(min(self.RUNNING_CREDIT * self.weights[i], now - t)
                                   for i, t in self.running.items())

    def start(self, ticker: bool = True) -> None:
        with self.lock:
            self._fill(time.perf_counter())
        if ticker:
            self.thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self.thread.start()

    def finished(self, task: Task) -> None:
        now = time.perf_counter()
        with self.lock:
            self.done += self.weights[task.index]
            if self.running.pop(task.index, None) is None and task.index in self.queue:
                self.queue.remove(task.index)  # finished before its inferred start: order differed
            self._fill(now)
        self._show(now)

    def _show(self, now: float | None = None) -> None:
        self.bar.n = round(min(self.position(now), self.bar.total or 0.0), 1)
        self.bar.refresh()

    def _tick(self) -> None:
        while not self.stop.wait(self.TICK):
            self._show()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


class ExecutionLog:
    """Appends one JSON line per finished group to ``executions.jsonl``: where and how long it ran."""

    def __init__(self, out_dir, executor: str):
        self.path = Path(out_dir) / EXECUTIONS
        self.invocation = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.executor = executor

    def append(self, task: Task, result: dict) -> None:
        g = task.group
        recs = result["records"]
        line = {"invocation": self.invocation, "executor": self.executor,
                "signature": _signature(g[0].method, g[0].spec, g[0].params_json, g[0].dataset,
                                        g[0].protocol),
                "spec": g[0].spec, "dataset": g[0].dataset, "protocol": g[0].protocol,
                "seeds": [r.seed for r in g], "runs": len(g), "order": task.index,
                "estimate_seconds": task.estimate, "cost_units": task.units,
                "started_at": result["started_at"], "seconds": round(result["seconds"], 4),
                "cpu_seconds": round(result["cpu_seconds"], 4), "worker": result["worker"],
                "devices": sorted({str(r.get("device")) for r in recs}),
                "statuses": sorted({r["status"] for r in recs})}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")


def execution_summary(out_dir) -> "pd.DataFrame":
    """CPU and wall seconds by method spec over every group in ``executions.jsonl`` (all invocations
    that wrote this store; a group computed twice, e.g. with --force, counts twice): columns spec,
    groups, runs, wall_seconds, cpu_seconds, cpu_share. Empty without the file."""
    import pandas as pd

    path = Path(out_dir) / EXECUTIONS
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                rows.append({"spec": e["spec"], "runs": int(e["runs"]), "wall_seconds": float(e["seconds"]),
                             "cpu_seconds": float(e["cpu_seconds"])})
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
    cols = ["spec", "groups", "runs", "wall_seconds", "cpu_seconds", "cpu_share"]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    out = df.groupby("spec", sort=False).agg(groups=("runs", "size"), runs=("runs", "sum"),
                                             wall_seconds=("wall_seconds", "sum"),
                                             cpu_seconds=("cpu_seconds", "sum")).reset_index()
    out["cpu_share"] = out.cpu_seconds / out.cpu_seconds.sum()
    return out.sort_values("cpu_seconds", ascending=False)[cols].reset_index(drop=True)


def _machine_busy() -> tuple | None:
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    return (sum(t) - t.idle - getattr(t, "iowait", 0.0), sum(t))


def utilisation_line(u: dict) -> str:
    """``cpu utilisation: 87% of 2 cores over 123 s wall (...)``: the groups' CPU time (user + system,
    measured around each group in its worker) over cores x wall time of the execution."""
    line = (f"cpu utilisation: {100 * u['share']:.0f}% of {u['cores']} cores over {u['wall_seconds']:.0f} s "
            f"wall ({u['cpu_seconds']:.0f} s of CPU in the groups; {u['executor']}")
    if u.get("machine_busy") is not None:
        line += f"; this machine was {100 * u['machine_busy']:.0f}% busy in all, other work included"
    return line + ")"
