"""The runner: expands an experiment into runs, skips stored ones, executes the rest in groups.

A run is a pure function of (method spec, dataset, protocol, seed) -> record + raw scores. Its key
hashes the method name and version, a digest of the method's source (its file and the files of its
package it imports, bench/sources.py), the fully resolved parameters, the dataset's checksum, the
protocol, the seed and the spec as written (two specs that resolve to the same parameters, e.g. a
sweep's value that equals the default, are stored as two runs, each under its own name); a stored ``ok`` run with that key is not recomputed (``force`` recomputes).
Which seeds train together is not in the key: a member of a stack is bit-identical to its solo fit
(methods/invariant.py, tests/test_invariance.py).

Runs of the same method, dataset, protocol and parameters except ``random_state`` form a group
(at most the method's ``max_group_size``) that is handed to the method's ``fit_group``, so a method
can train several seeds as one stack; each member is still stored as its own run. Groups are a
function of the grid alone, never of the worker count. Each group runs with one torch thread;
parallelism comes from worker processes.
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
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from bench import WorkError, data, registry
from bench.config import Experiment
from bench.metrics import evaluate
from bench.protocols import SEED_FREE, make_split
from bench.sources import method_digest
from bench.store import RunLock, Store
from bench.telemetry import health_flags
from bench.thresholds import threshold as compute_threshold


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
        return (self.method, self.spec, json.dumps(p, sort_keys=True), self.dataset, self.protocol)


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
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_init(parent_pid: int) -> None:
    """Run in each worker process as it starts. Ctrl-C is the parent's to handle (it stops the workers);
    and a worker whose parent is gone, even by SIGKILL (which nothing can catch), exits within a
    second instead of computing on for nobody."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _stop_workers(pool: ProcessPoolExecutor, futures) -> None:
    """Cancel what has not started and end the worker processes now: ``shutdown`` alone would wait
    for the groups in flight to finish (minutes of training nobody will store)."""
    for f in futures:
        f.cancel()
    # no public way to end the workers before Python 3.14 (terminate_workers): the private map
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()


def make_groups(runs: list[Run]) -> list[list[Run]]:
    buckets: dict[tuple, list[Run]] = {}
    for r in runs:
        buckets.setdefault(r.group_key(), []).append(r)
    groups = []
    for members in buckets.values():
        size = max(1, int(getattr(_detector_class(members[0]), "max_group_size", 1)))
        if _shares_fit(members[0]):
            size = len(members)  # deterministic method on a seed-free split: one fit serves all
        groups += [members[i:i + size] for i in range(0, len(members), size)]
    return groups


def _detector_class(run: Run) -> type:
    return registry.entry(run.method).cls


def _shares_fit(run: Run) -> bool:
    """A method without randomness on a protocol whose split ignores the seed gives the same scores
    for every seed: it is fitted once and the result is stored for each seed."""
    return "random_state" not in run.params and run.protocol in SEED_FREE


def _instantiate(run: Run):
    params = run.params
    cls = _detector_class(run)
    return cls(**params)


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
    return f"{type(exc).__name__}: {exc}{where}"


def execute_group(group: list[Run], policy: str, alpha: float, data_dir, env: dict) -> list[dict]:
    """Fit a group and score its members. Never raises for a method's failure: every member comes
    back as a record with a status."""
    import torch

    torch.set_num_threads(1)  # determinism and fair timing: one thread per run
    ds = data.load(group[0].source or group[0].dataset, data_dir, group[0].label_col)
    splits = [make_split(ds, r.protocol, r.seed) for r in group]
    fit_members = group[:1] if _shares_fit(group[0]) else group
    t0 = time.perf_counter()
    try:
        dets = [_instantiate(r) for r in fit_members]
        fitted = type(dets[0]).fit_group(dets, [s.X_train for s in splits[:len(fit_members)]])
        if len(fitted) != len(fit_members):
            raise RuntimeError(f"fit_group returned {len(fitted)} items for {len(fit_members)} runs")
    except Exception as exc:  # noqa: BLE001 - the whole group failed
        fitted = [exc] * len(fit_members)
    fit_seconds = (time.perf_counter() - t0) / len(fit_members)

    records, scored = [], {}
    for i, (run, split) in enumerate(zip(group, splits)):
        j = 0 if len(fit_members) == 1 else i
        det = fitted[j]
        rec = {"key": run.key, "method": run.method, "spec": run.spec, "params": run.params_json,
               "dataset": run.dataset, "dataset_sha256": run.dataset_sha256,
               "protocol": run.protocol, "seed": run.seed, "threshold_policy": policy,
               "alpha": alpha, "fit_seconds": fit_seconds, "group_size": len(fit_members),
               "versions": env["versions"], "git_commit": env["git_commit"], "device": "cpu",
               "y_test": split.y_test, "error": None, "flags": ""}
        if isinstance(det, BaseException):
            rec.update(status="failed", error=_error_text(det))
        else:
            rec["device"] = str(getattr(det, "device_", "cpu"))
            history = getattr(det, "history_", None)
            rec["history"] = history
            rec["flags"] = ",".join(health_flags(history, getattr(det, "monitored_losses", None)))
            try:
                if j not in scored:
                    t1 = time.perf_counter()
                    tr = np.asarray(det.anomaly_score(split.X_train), dtype=float).reshape(-1)
                    te = np.asarray(det.anomaly_score(split.X_test), dtype=float).reshape(-1)
                    scored[j] = (tr, te, time.perf_counter() - t1)
                tr, te, score_seconds = scored[j]
                rec.update(train_scores=tr, test_scores=te, score_seconds=score_seconds)
                rec.update(_judge(tr, te, split, policy, alpha,
                                   getattr(det, "threshold_family", None)))
            except Exception as exc:  # noqa: BLE001
                rec.update(status="failed", error=_error_text(exc))
        rec["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
        records.append(rec)
    return records


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


def run_experiment(exp: Experiment, out_dir, data_dir=None, workers: int = 1, force: bool = False,
                   quick: bool = False, progress: bool = True) -> dict:
    """Run every pending run of ``exp`` into the store in ``out_dir``. Returns counts by status of the
    runs computed now, ``total`` and ``skipped`` (already stored ok), and ``keys``: every run of ``exp``."""
    from tqdm import tqdm

    runs = expand(exp, data_dir, quick)
    store = Store(out_dir)
    try:  # one run per results directory at a time: refuse, naming the holder
        lock = RunLock(out_dir).acquire()
    except BaseException:
        store.close()
        raise
    done = set() if force else store.ok_keys()
    pending = [r for r in runs if r.key not in done]
    groups = make_groups(pending)
    env = environment()
    counts = {"total": len(runs), "skipped": len(runs) - len(pending), "ok": 0, "failed": 0,
              "degenerate": 0, "keys": [r.key for r in runs]}
    bar = tqdm(total=len(pending), disable=not progress, unit="run", dynamic_ncols=True,
               desc=f"{exp.name}", file=sys.stderr)

    def save(records):
        for rec in records:
            store.put(rec)
            counts[rec["status"]] += 1
            bar.update(1)
        bar.set_postfix_str(f"{records[-1]['spec']} / {records[-1]['dataset']}", refresh=False)

    try:
        if workers <= 1:
            for g in groups:
                save(execute_group(g, exp.threshold, exp.alpha, data_dir, env))
        else:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
            futures = [pool.submit(execute_group, g, exp.threshold, exp.alpha, data_dir, env)
                       for g in groups]
            try:
                for fut in as_completed(futures):
                    save(fut.result())
            except BrokenProcessPool as exc:
                _stop_workers(pool, futures)
                raise WorkError("a worker process died (killed from outside, e.g. by the out-of-memory "
                                "killer); finished runs are stored, run the same command again to "
                                "resume") from exc
            except BaseException:  # interrupt, SIGTERM, a failing store: the workers stop now
                _stop_workers(pool, futures)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()
        store.close()
        lock.release()
    return counts
