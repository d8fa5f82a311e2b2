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
import os
import platform
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback

import numpy as np

from bench import WorkError
from bench.contract.interrupts import (describe as _describe_exc, method_failure, note_user_signal,
                                       user_signals)
from bench.evaluation import data
from bench.evaluation.metrics import evaluate
from bench.evaluation.protocols import make_split
from bench.evaluation.thresholds import threshold as compute_threshold
from bench.execution.config import Experiment
from bench.execution.plan import (Run, expand, check_datasets, make_groups, _detector_class, _shares_fit,
                                  _instantiate, Task, stored_timings, longest_first, progress_weights,
                                  _data_ref)
from bench.execution.progress import WorkProgress, ExecutionLog, _machine_busy
from bench.execution.store import RunLock, Store
from bench.execution.telemetry import health_flags

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


def _cpu_seconds() -> float:
    """CPU seconds of this process and of the child processes it waited for (a compiled training
    step's C++ compiler runs as one)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_task(task: Task, policy: str, alpha: float, env: dict, limit: float | None = None) -> dict:
    """Execute one task in a worker (or in the driver). Every executor runs it the same way: one BLAS
    thread (threadpoolctl) and one torch thread (execute_group), so scores do not depend on where it ran;
    parallelism comes from running several tasks at once."""
    import socket

    from threadpoolctl import threadpool_limits

    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0, c0 = time.perf_counter(), _cpu_seconds()
    with threadpool_limits(limits=1):
        records = execute_group(task.group, policy, alpha, None, env, ds=task.dataset, cls=task.cls,
                                limit=limit)
    return {"records": records, "seconds": time.perf_counter() - t0,
            "cpu_seconds": _cpu_seconds() - c0, "started_at": started,
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


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
