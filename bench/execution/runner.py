"""The runner: expands an experiment into runs, skips stored ones, executes the rest in groups.

A run is a pure function of (method spec, dataset, protocol, seed) -> record + raw scores. Its key
hashes the method name and version, a digest of the method's source (its file and the files of its
package it imports, bench/contract/sources.py), the fully resolved parameters, the dataset's checksum, the
protocol, the seed and the spec as written (two specs that resolve to the same parameters, e.g. a
sweep's value that equals the default, are stored as two runs, each under its own name); a stored ``ok`` run with that key is not recomputed (``force`` recomputes).
Which seeds train together is not in the key: a member of a stack is bit-identical to its solo fit
(engine/invariant.py, tests/test_invariance.py).

Runs of the same method, dataset, protocol and parameters except ``random_state`` form a group that is
handed to the method's ``fit_group``, so a method can train several seeds as one stack; each member is
still stored as its own run. A method that declares ``member_params`` (parameters its stacks take per
member, e.g. adVAE's weights, margins and hinge switches) has its runs grouped by its class, dataset,
protocol and the other parameters instead: the settings of a sweep, and variants registered under other
names on the same class (advae, g-advae), share a group. A group larger than the method's
``max_group_size`` is split into near-equal parts. When that leaves fewer groups than the executor
has slots (a one-dataset sweep on a 2-core laptop: one stack of 25), the largest groups are halved
until every slot has one, so no core idles; otherwise groups are a function of the grid alone. The
results never depend on the grouping. Each group runs with one torch thread; parallelism comes from
worker processes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import BenchError, WorkError
from bench.evaluation import data
from bench.contract import registry
from bench.execution.config import Experiment
from bench.contract.interrupts import describe as _describe_exc, method_failure, note_user_signal, user_signals
from bench.evaluation.metrics import evaluate
from bench.evaluation.protocols import SEED_FREE, make_split
from bench.contract.sources import method_digest
from bench.execution.store import RunLock, Store
from bench.execution.telemetry import health_flags
from bench.evaluation.thresholds import threshold as compute_threshold


@dataclass(frozen=True)
class Run:
    key: str
    spec: str  # canonical spec string as written in the config: the method's display name
    method: str  # registry name (or pyod:Class)
    params_json: str  # fully resolved constructor parameters
    dataset: str
    dataset_sha256: str
    protocol: str
    seed: int
    source: str = ""  # an own dataset's file (absolute path); "" = the catalogued dataset ``dataset``
    label_col: str | None = None  # an own CSV file's label column

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    def group_key(self) -> tuple:
        p = self.params
        p.pop("random_state", None)
        cls = _detector_class(self)
        free = tuple(getattr(cls, "member_params", ()) or ())
        if not free:
            return (self.method, self.spec, json.dumps(p, sort_keys=True), self.dataset, self.protocol)
        for name in free:
            p.pop(name, None)
        return (f"{cls.__module__}.{cls.__qualname__}", json.dumps(p, sort_keys=True), self.dataset,
                self.source, self.protocol)


def _jsonable(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=repr)


def expand(exp: Experiment, data_dir=None, quick: bool = False) -> list[Run]:
    """Every run of the experiment, in config order (dataset, then method, then seed)."""
    runs = []
    for dataset in exp.datasets:
        ds = data.load(dataset, data_dir, exp.label_col)  # fails fast on a missing or corrupt file
        source = str(Path(dataset).resolve()) if data.is_own(dataset) else ""
        for spec in exp.methods:
            name, spec_params = registry.parse_spec(spec)
            canonical = registry.format_spec(name, spec_params)
            extra = exp.params_for(name, ds.name)
            if quick and not name.startswith("pyod:"):
                extra = {**registry.entry(name).cls.quick_params, **extra}
            det, name, params = registry.build(spec, extra)
            version = getattr(type(det), "version", "1")
            code = method_digest(type(det))  # the method's file and the files it imports
            for protocol, seed in itertools.product(exp.protocols, exp.seeds):
                p = dict(params)
                if "random_state" in p:
                    p["random_state"] = int(seed)
                pj = _jsonable(p)
                key = hashlib.sha256(json.dumps(
                    [name, version, code, pj, ds.identity, protocol, int(seed), canonical]
                ).encode()).hexdigest()[:24]
                runs.append(Run(key, canonical, name, pj, ds.name, ds.sha256, protocol, int(seed),
                                source, ds.info.get("label_col")))
    return runs


def check_datasets(runs: list[Run], store: Store) -> list[str]:
    """Before any work: BenchError when a dataset's name is one the store holds for other data (another
    file with the same stem: results are grouped by name, so they would mix), or two of the run's
    datasets are the same data. Returns a note for each file whose data the store holds under another
    name (its runs are that dataset's: the run key holds the data's checksum, not the file's name)."""
    mine: dict[str, tuple[str, str]] = {}
    for r in runs:
        mine.setdefault(r.dataset, (r.dataset_sha256, r.source))
    seen: dict[str, str] = {}
    for name, (sha, src) in mine.items():
        if sha in seen:
            raise BenchError(f"datasets {seen[sha]} and {src or name} are the same data (sha256 "
                             f"{sha[:12]}); list one of them")
        seen[sha] = src or name
    stored, notes = store.datasets(), []
    for name, (sha, src) in mine.items():
        other = {s: f for s, f in stored.get(name, {}).items() if s != sha}
        if other:
            old_sha, old_file = next(iter(other.items()))
            raise BenchError(f"dataset {src or name} is named {name!r}, but the store {store.path} holds runs "
                             f"of another file under that name ({old_file or 'its path was not recorded'}, "
                             f"sha256 {old_sha[:12]}; this one's is {sha[:12]}); rename one of the files "
                             "(results are grouped by dataset name) or choose another --out")
        for old_name, shas in stored.items():
            if old_name != name and sha in shas:
                notes.append(f"note: dataset {src or name} holds the same data as {old_name!r} in "
                             f"{store.path} ({shas[sha] or 'sha256 ' + sha[:12]}): it is the same dataset, "
                             f"so its runs are {old_name!r}'s and are shown under that name")
    return notes


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, job schedulers): handled as an interrupt, with exit status 143."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block (main thread only), SIGTERM raises ``Terminated``, so the workers are stopped
    and the store closed instead of the process vanishing and leaving its workers running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        note_user_signal()
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def make_groups(runs: list[Run], slots: int = 1) -> list[list[Run]]:
    """The runs as groups for ``fit_group`` (see the module docstring); with ``slots`` > 1, a grid
    of fewer groups than slots has its largest groups halved until each slot has one."""
    buckets: dict[tuple, list[Run]] = {}
    for r in runs:
        buckets.setdefault(r.group_key(), []).append(r)
    groups = []
    for members in buckets.values():
        size = max(1, int(getattr(_detector_class(members[0]), "max_group_size", 1)))
        if _shares_fit(members[0]):
            size = len(members)  # deterministic method on a seed-free split: one fit serves all
        groups += split_evenly(members, size)
    return fill_slots(groups, slots)


def fill_slots(groups: list[list[Run]], slots: int) -> list[list[Run]]:
    """Halve the largest group (the first of equal ones; never one whose fit serves every seed) while
    there are fewer groups than ``slots``: the halves run at once on two workers, each member still
    exactly as it would train alone."""
    groups = list(groups)
    while len(groups) < slots:
        splittable = [i for i, g in enumerate(groups) if len(g) > 1 and not _shares_fit(g[0])]
        if not splittable:
            break
        i = max(splittable, key=lambda j: (len(groups[j]), -j))
        groups[i:i + 1] = split_evenly(groups[i], -(-len(groups[i]) // 2))
    return groups


def split_evenly(items: list, size: int) -> list[list]:
    """``items`` in order, as the fewest parts of at most ``size`` items, their sizes within one of
    each other (60 runs at 25: 20 + 20 + 20, not 25 + 25 + 10)."""
    parts = -(-len(items) // max(1, size))
    base, extra = divmod(len(items), max(1, parts))
    out, start = [], 0
    for i in range(parts):
        n = base + (i < extra)
        out.append(items[start:start + n])
        start += n
    return out


def _detector_class(run: Run) -> type:
    return registry.entry(run.method).cls


def _shares_fit(run: Run) -> bool:
    """A method without randomness on a protocol whose split ignores the seed gives the same scores
    for every seed: it is fitted once and the result is stored for each seed."""
    return ("random_state" not in run.params and run.protocol in SEED_FREE
            and not getattr(_detector_class(run), "member_params", ()))


def _instantiate(run: Run, cls: type | None = None):
    return (cls or _detector_class(run))(**run.params)


def environment() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for pkg in ("advae-bench", "torch", "numpy", "scipy", "scikit-learn", "pyod", "pandas"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    try:
        root = data.REPO_ROOT
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = (commit + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    from bench import NUMERICS_ENV

    for name in NUMERICS_ENV:  # the numerical code paths the run's kernels took
        versions[name] = os.environ.get(name, "")
    return {"versions": versions, "git_commit": commit}


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {_describe_exc(exc)}{where}"


class RunTimeout(BaseException):
    """A group ran past its time limit (raised by the alarm of ``time_limit``). A BaseException that
    ``interrupts.method_failure`` does not count as a method's failure, so that a method's own
    ``except Exception`` and ``Detector.fit_group``'s per-member handler cannot take it for a failure
    of one member and go on with the next."""


TIMEOUT_TEXT = "time limit of {:g} s per run exceeded"


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise RunTimeout in this thread once ``seconds`` of wall time have passed (SIGALRM). Works
    where groups run in a process's main thread (the local pool's workers, the serial driver); a
    Dask worker runs tasks in threads, where no limit is applied (yields False)."""
    if not seconds or not hasattr(signal, "setitimer") or \
            threading.current_thread() is not threading.main_thread():
        yield False
        return

    def alarm(signum, frame):
        raise RunTimeout(f"{seconds:g} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def execute_group(group: list[Run], policy: str, alpha: float, data_dir, env: dict, ds=None,
                  cls: type | None = None, limit: float | None = None) -> list[dict]:
    """Fit a group and score its members. Never raises for a method's failure: every member comes
    back as a record with a status. ``ds``: the dataset (else loaded from ``data_dir``); ``cls``: the
    method's class (else looked up in the registry); ``limit``: seconds per run (fit and scoring; the
    group gets ``limit`` x its fitted members), past which the members not yet scored are stored
    with status ``timeout``."""
    import torch

    torch.set_num_threads(1)  # determinism and fair timing: one thread per run
    if ds is None:
        ds = data.load(group[0].source or group[0].dataset, data_dir, group[0].label_col)
    splits = [make_split(ds, r.protocol, r.seed) for r in group]
    fit_members = group[:1] if _shares_fit(group[0]) else group
    with time_limit(limit * len(fit_members) if limit else None):
        return _fit_and_score(group, splits, fit_members, policy, alpha, env, cls, limit)


def _fit_and_score(group, splits, fit_members, policy, alpha, env, cls, limit) -> list[dict]:
    t0 = time.perf_counter()
    try:
        dets = [_instantiate(r, cls) for r in fit_members]
        fitted = type(dets[0]).fit_group(dets, [s.X_train for s in splits[:len(fit_members)]])
        if len(fitted) != len(fit_members):
            raise RuntimeError(f"fit_group returned {len(fitted)} items for {len(fit_members)} runs")
    except BaseException as exc:  # noqa: BLE001 - the whole group failed (a sys.exit in fit too) ...
        if not (isinstance(exc, RunTimeout) or method_failure(exc)):
            raise  # ... but the user's Ctrl-C stops the invocation
        fitted = [exc] * len(fit_members)
    fit_seconds = (time.perf_counter() - t0) / len(fit_members)

    records, scored, expired = [], {}, False
    for i, (run, split) in enumerate(zip(group, splits)):
        j = 0 if len(fit_members) == 1 else i
        det = fitted[j]
        rec = {"key": run.key, "method": run.method, "spec": run.spec, "params": run.params_json,
               "dataset": run.dataset, "dataset_sha256": run.dataset_sha256,
               "protocol": run.protocol, "seed": run.seed, "dataset_file": run.source,
               "threshold_policy": policy,
               "alpha": alpha, "fit_seconds": fit_seconds, "group_size": len(fit_members),
               "versions": env["versions"], "git_commit": env["git_commit"], "device": "cpu",
               "y_test": split.y_test, "error": None, "flags": ""}
        if isinstance(det, RunTimeout) or (not isinstance(det, BaseException) and expired):
            rec.update(status="timeout", error=TIMEOUT_TEXT.format(limit))
        elif isinstance(det, BaseException):
            rec.update(status="failed", error=_error_text(det))
        else:
            rec["device"] = str(getattr(det, "device_", "cpu"))
            history = getattr(det, "history_", None)
            rec["history"] = history
            rec["flags"] = ",".join(health_flags(history, getattr(det, "monitored_losses", None)))
            try:
                if j not in scored:
                    t1 = time.perf_counter()
                    tr = _scores(det.anomaly_score(split.X_train))
                    te = _scores(det.anomaly_score(split.X_test))
                    scored[j] = (tr, te, time.perf_counter() - t1)
                tr, te, score_seconds = scored[j]
                rec.update(train_scores=tr, test_scores=te, score_seconds=score_seconds)
                rec.update(_judge(tr, te, split, policy, alpha,
                                   getattr(det, "threshold_family", None)))
            except RunTimeout:
                expired = True
                rec.update(status="timeout", error=TIMEOUT_TEXT.format(limit))
            except BaseException as exc:  # noqa: BLE001
                if not method_failure(exc):
                    raise
                rec.update(status="failed", error=_error_text(exc))
        rec["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
        records.append(rec)
    return records


def _scores(values) -> np.ndarray:
    """A method's scores as floats: a column or row vector becomes (n,); any other shape is kept, so
    the failure names the shape the method returned, not a flattened one."""
    arr = np.asarray(values, dtype=float)
    return arr.reshape(-1) if arr.ndim > 1 and sorted(arr.shape)[:-1] == [1] * (arr.ndim - 1) else arr


def _judge(tr, te, split, policy, alpha, family=None) -> dict:
    if tr.shape != (len(split.X_train),) or te.shape != (len(split.X_test),):
        return {"status": "failed", "error": f"scores have shapes {tr.shape}/{te.shape}, expected "
                f"({len(split.X_train)},)/({len(split.X_test)},)"}
    if not (np.isfinite(tr).all() and np.isfinite(te).all()):
        bad = int((~np.isfinite(tr)).sum() + (~np.isfinite(te)).sum())
        return {"status": "failed", "error": f"{bad} non-finite scores"}
    if np.ptp(te) == 0 or np.ptp(tr) == 0:
        return {"status": "degenerate", "error": "constant scores"}
    thr = compute_threshold(policy, tr, alpha, family)
    return {"status": "ok", "threshold": thr, **evaluate(split.y_test, te, thr)}


# ---------------------------------------------------------------------------------------------
# Tasks, longest-first order, and the driver


@dataclass
class Task:
    """One group of runs as an executor receives it: everything the group needs travels with it."""
    index: int  # position in the order of execution
    group: list[Run]
    dataset: data.Dataset  # the arrays (small), so a remote worker needs no shared file system
    cls: type | None = None  # the method's class, for workers without this registry (Dask)
    estimate: float | None = None  # expected seconds (stored timings or the calibrated cost model)
    units: float = 0.0  # cost model: declared ``cost`` x n_iter x (1 + d / COST_WIDTH) x fitted members
    meta: dict = field(default_factory=dict)


def run_task(task: Task, policy: str, alpha: float, env: dict, limit: float | None = None) -> dict:
    """Execute one task in a worker (or in the driver). Every executor runs it the same way: one BLAS
    thread (threadpoolctl) and one torch thread (execute_group), so scores do not depend on where it ran;
    parallelism comes from running several tasks at once."""
    import socket

    from threadpoolctl import threadpool_limits

    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0, c0 = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1):
        records = execute_group(task.group, policy, alpha, None, env, ds=task.dataset, cls=task.cls,
                                limit=limit)
    return {"records": records, "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0, "started_at": started,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


EXECUTIONS = "executions.jsonl"  # per-group timings, appended by the driver; read back for ordering only


def _signature(method, spec, params_json, dataset, protocol) -> str:
    p = json.loads(params_json) if isinstance(params_json, str) else dict(params_json or {})
    p.pop("random_state", None)
    return json.dumps([method, spec, json.dumps(p, sort_keys=True), dataset, protocol])


def stored_timings(store: Store, out_dir) -> dict[str, float]:
    """Seconds per run of each group signature (a group's runs without their seed) from earlier runs:
    the store's fit + score seconds of its ok runs, overridden by the newest wall time a group of that
    signature took in ``executions.jsonl``. Used to order groups, never for results."""
    known: dict[str, list[float]] = {}
    df = store.frame()
    for row in df[df.status == "ok"].itertuples():
        if row.fit_seconds is None or row.fit_seconds != row.fit_seconds:
            continue
        score = row.score_seconds if row.score_seconds == row.score_seconds and row.score_seconds else 0.0
        sig = _signature(row.method, row.spec, row.params, row.dataset, row.protocol)
        known.setdefault(sig, []).append(float(row.fit_seconds) + float(score))  # fit: per member
    timings = {sig: float(np.median(v)) for sig, v in known.items()}
    path = Path(out_dir) / EXECUTIONS
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                timings[e["signature"]] = float(e["seconds"]) / max(1, int(e["runs"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line (the driver was killed mid-write): skip it
    return timings


#: Features at which a stacked network's per-iteration cost doubles over its fixed part (cost units).
COST_WIDTH = 50.0


def cost_units(group: list[Run], ds: data.Dataset) -> float:
    """The method's declared ``cost`` (per iteration, relative to AE) x ``n_iter`` x (1 + features /
    COST_WIDTH) x fitted members. Rows do not enter: the deep methods train on mini-batches, and their
    CPU per run on the paper's datasets follows the width, not the rows (AE, 20000 iterations: 2.7 s
    on pendigits, d = 16 and 6870 rows; 4.8 s on optdigits, d = 64 and 5216 rows; adVAE 8.4 and
    15.2 s). A method with ``n_iter`` that declares no cost is taken as AE-like (1); one with neither
    is 0 (the classical methods: quick, so they go last)."""
    n_iter = group[0].params.get("n_iter")
    cost = getattr(_detector_class(group[0]), "cost", None) or (1.0 if n_iter is not None else 0.0)
    if not cost:
        return 0.0
    n_iter = n_iter if isinstance(n_iter, (int, float)) and n_iter > 0 else 1
    fitted = 1 if _shares_fit(group[0]) else len(group)
    return float(cost) * float(n_iter) * (1.0 + ds.X.shape[1] / COST_WIDTH) * fitted


def longest_first(groups: list[list[Run]], datasets: dict, timings: dict[str, float]) -> list[Task]:
    """Tasks ordered longest first, so no long group starts last and keeps one core busy alone at the
    end. A group's length: its signature's stored seconds per run x its runs where known; else its
    cost units, converted to seconds by the median seconds per unit of the groups known both ways
    (without any such group, cost-model groups come before timed ones). Ties keep config order."""
    rows = []
    for i, g in enumerate(groups):
        ds = datasets[_data_ref(g[0])]
        sig = _signature(g[0].method, g[0].spec, g[0].params_json, g[0].dataset, g[0].protocol)
        known = timings.get(sig)
        rows.append((i, g, ds, known * len(g) if known is not None else None, cost_units(g, ds)))
    ratios = [sec / units for _, _, _, sec, units in rows if sec is not None and units > 0]
    scale = float(np.median(ratios)) if ratios else None

    def key(row):
        i, _, _, sec, units = row
        if sec is not None:
            return (0 if scale is not None else 1, -sec, i)
        if units > 0:
            return (0, -units * (scale if scale is not None else 1.0), i)
        return (2, 0.0, i)

    ordered = sorted(rows, key=key)
    tasks = []
    for n, (i, g, ds, sec, units) in enumerate(ordered):
        est = sec if sec is not None else (units * scale if scale is not None and units > 0 else None)
        tasks.append(Task(n, g, ds, estimate=est, units=units))
    return tasks


#: CPU seconds per cost unit before this store has timed a group of both kinds: AE, 20000 iterations,
#: cardio (d = 21, 2.84e4 units) took 3.1 s per run on this project's 2-core machines (the
#: contamination study, 5-seed stacks). Only the progress bar uses it.
DEFAULT_SECONDS_PER_UNIT = 1.2e-4
#: Seconds per run assumed for a group with neither a stored timing nor a cost (the classical methods).
DEFAULT_SECONDS_PER_RUN = 2.0


def progress_weights(tasks: list[Task]) -> dict[int, float]:
    """Each task's share of the work, in estimated seconds: its estimate (stored timings, or the cost
    model calibrated on them), else its cost units at DEFAULT_SECONDS_PER_UNIT, else
    DEFAULT_SECONDS_PER_RUN per run. The progress bar advances by these, so a grid that starts with
    its longest groups shows a time estimate from its first finished group, not from a count of runs."""
    out = {}
    for t in tasks:
        if t.estimate is not None and t.estimate > 0:
            out[t.index] = float(t.estimate)
        elif t.units > 0:
            out[t.index] = t.units * DEFAULT_SECONDS_PER_UNIT
        else:
            out[t.index] = DEFAULT_SECONDS_PER_RUN * len(t.group)
    return out


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


def _data_ref(run: Run) -> tuple:
    return (run.source or run.dataset, run.label_col)


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


def run_experiment(exp: Experiment, out_dir, data_dir=None, workers: int = 1, force: bool = False,
                   quick: bool = False, progress: bool = True, executor=None) -> dict:
    """Run every pending run of ``exp`` into the store in ``out_dir``. Returns counts by status of the
    runs computed now, ``total`` and ``skipped`` (already stored ok), ``keys``: every run of ``exp``,
    and ``utilisation``. ``executor`` (bench/execution/executors.py, started by the caller or here; the caller
    closes it): default, ``workers`` local processes (one: in this process)."""
    from tqdm import tqdm

    from bench.execution import executors

    runs = expand(exp, data_dir, quick)
    store = Store(out_dir, writing=True)  # a read-only store is refused here, before any fit
    try:  # one run per results directory at a time: refuse, naming the holder
        lock = RunLock(out_dir).acquire()
    except BaseException:
        store.close()
        raise
    try:
        for note in check_datasets(runs, store):
            print(note, file=sys.stderr)
    except BaseException:
        store.close()
        lock.release()
        raise
    own = executor is None
    executor = executors.local_executor(workers) if own else executor
    bar = None
    try:
        done = set() if force else store.ok_keys()
        if not force:  # a run that timed out under this limit or a larger one is not tried again
            done |= {k for k, lim in store.timeouts().items()
                     if exp.time_limit is not None and lim >= exp.time_limit}
        pending = [r for r in runs if r.key not in done]
        executor.start()  # (a Dask cluster's slot count is known once connected)
        groups = make_groups(pending, executor.slots)
        datasets = {ref: data.load(ref[0], data_dir, ref[1]) for ref in {_data_ref(r) for r in pending}}
        tasks = longest_first(groups, datasets, stored_timings(store, out_dir))
        if getattr(executor, "remote", False):
            for t in tasks:  # a remote worker has no --plugin registry: the class travels with the task
                t.cls = _detector_class(t.group[0])
                executors.pickle_by_value(t.cls)
        env = environment()
        counts = {"total": len(runs), "skipped": len(runs) - len(pending), "ok": 0, "failed": 0,
                  "degenerate": 0, "timeout": 0, "keys": [r.key for r in runs]}
        weights = progress_weights(tasks)
        bar = tqdm(total=round(sum(weights.values()), 1), disable=not progress, unit="s",
                   dynamic_ncols=True, desc=f"{exp.name}: {len(pending)} runs", file=sys.stderr,
                   bar_format="{desc} |{bar}| {percentage:3.0f}% of the estimated work "
                              "[{elapsed}<{remaining}{postfix}]")
        runs_done = [0]
        log = ExecutionLog(out_dir, executor.describe())
        cpu = [0.0]
        work = WorkProgress(bar, tasks, weights, executor.slots)

        def on_result(task: Task, result: dict) -> None:
            records = result["records"]
            for rec in records:  # the driver alone writes the store, as results arrive
                _put(store, rec)
                counts[rec["status"]] += 1
            runs_done[0] += len(records)
            work.finished(task)
            bar.set_postfix_str(f"{runs_done[0]}/{len(pending)} runs; last {records[-1]['spec']} / "
                                f"{records[-1]['dataset']}", refresh=False)
            cpu[0] += result["cpu_seconds"]
            log.append(task, result)

        busy0, t0 = _machine_busy(), time.perf_counter()
        try:
            work.start(ticker=progress)
            with user_signals():  # a Ctrl-C is the user's; a method's own KeyboardInterrupt fails its run
                executor.run(run_task, tasks, (exp.threshold, exp.alpha, env, exp.time_limit), on_result)
        finally:
            work.close()
        store.check_same_file()  # never report success over a store that is no longer there
        wall = time.perf_counter() - t0
        busy1 = _machine_busy()
    finally:
        if bar is not None:
            bar.close()
        store.close()
        lock.release()
        if own:
            executor.close()
    cores = executor.cores()
    counts["utilisation"] = {
        "cpu_seconds": cpu[0], "wall_seconds": wall, "cores": cores, "executor": executor.describe(),
        "share": cpu[0] / (cores * wall) if wall > 0 else 0.0,
        "machine_busy": ((busy1[0] - busy0[0]) / (busy1[1] - busy0[1]) if busy0 and busy1
                         and busy1[1] > busy0[1] and executor.on_this_machine else None)}
    return counts


def _put(store: Store, rec: dict) -> None:
    """Store one run; a failing write (disk full...) is a WorkError that says truly what is stored."""
    try:
        store.put(rec)
    except (OSError, sqlite3.Error) as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise WorkError(f"{type(exc).__name__}: {exc}{where} while storing a run in {store.path}; the "
                        f"{store.puts} runs this invocation finished before it are stored there, the "
                        "others are not: run the same command again for the rest") from None


def utilisation_line(u: dict) -> str:
    """``cpu utilisation: 87% of 2 cores over 123 s wall (...)``: the groups' CPU time (user + system,
    measured around each group in its worker) over cores x wall time of the execution."""
    line = (f"cpu utilisation: {100 * u['share']:.0f}% of {u['cores']} cores over {u['wall_seconds']:.0f} s "
            f"wall ({u['cpu_seconds']:.0f} s of CPU in the groups; {u['executor']}")
    if u.get("machine_busy") is not None:
        line += f"; this machine was {100 * u['machine_busy']:.0f}% busy in all, other work included"
    return line + ")"
