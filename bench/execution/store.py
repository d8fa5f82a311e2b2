"""The result store: one SQLite database per experiment output directory.

One row per run, written in a single transaction, so killing the process at any moment loses at
most the run in flight and never corrupts the store. Raw train and test scores (and the test
labels) are kept as .npy blobs, so metrics, tables and plots are recomputed without re-training.

Opening checks the directory can be written and the file is a sound store of this suite; anything else
(not SQLite, truncated or malformed, another program's database) is a BenchError naming the file, and
the file is left exactly as it was.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError, WorkError
from bench.evaluation.data import REPO_ROOT

COLUMNS = {
    "key": "TEXT PRIMARY KEY", "method": "TEXT", "spec": "TEXT", "params": "TEXT",
    "dataset": "TEXT", "dataset_sha256": "TEXT", "protocol": "TEXT", "seed": "INTEGER",
    "status": "TEXT", "error": "TEXT", "flags": "TEXT",
    "auc": "REAL", "ap": "REAL", "precision": "REAL", "recall": "REAL", "f1": "REAL",
    "threshold_policy": "TEXT", "alpha": "REAL", "threshold": "REAL",
    "fit_seconds": "REAL", "score_seconds": "REAL", "group_size": "INTEGER", "device": "TEXT",
    "versions": "TEXT", "git_commit": "TEXT", "created_at": "TEXT", "history": "TEXT",
    "train_scores": "BLOB", "test_scores": "BLOB", "y_test": "BLOB",
}
#: Columns added after the first stores were written: a store without them is still this suite's; a
#: run adds them (ALTER TABLE), a reader sees them empty.
ADDED = {"dataset_file": "TEXT"}  # an own dataset's file (absolute path); "" for a catalogued one
BLOBS = ("train_scores", "test_scores", "y_test")
DB_NAME = "runs.sqlite"
LOCK_NAME = "run.lock"


def to_blob(arr) -> bytes | None:
    if arr is None:
        return None
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def from_blob(blob) -> np.ndarray | None:
    return None if blob is None else np.load(io.BytesIO(blob), allow_pickle=False)


#: What the project publishes (committed, each folder with its provenance): no command writes there;
#: tools/publish_results.py copies a finished output folder into it.
PUBLISHED_DIR = REPO_ROOT / "results"
#: Where runs and reports write by default, one folder per config (git-ignored).
RUNS_DIR = REPO_ROOT / "runs"


def not_published(path: str | Path, what: str = "--out") -> Path:
    """``path``, or a BenchError when it lies in ``results/``: a run or a report never overwrites what
    the project publishes."""
    p, pub = Path(path).resolve(), PUBLISHED_DIR.resolve()
    if p == pub or pub in p.parents:
        raise BenchError(f"{what} {path} is inside results/, which holds what the project publishes "
                         "(committed, with its provenance); runs and reports write to runs/ (the default) "
                         "or any other folder, and tools/publish_results.py copies a finished one into "
                         "results/")
    return Path(path)


def writable_dir(path: str | Path, what: str = "output directory (--out)") -> Path:
    """Create ``path`` if needed and check a file can be written in it, before any work starts;
    BenchError saying why not (a parent that is a file, no permission, read-only file system...)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BenchError(f"{what} {p} exists and is not a directory; choose another") from None
    except NotADirectoryError:
        blocker = next((q for q in [p, *p.parents] if q.exists() and not q.is_dir()), p)
        raise BenchError(f"{what} {p} cannot be created: {blocker} is a file; choose another") from None
    except OSError as exc:
        raise BenchError(f"{what} {p} cannot be created ({exc.strerror or exc}); choose another") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"{what} {p} cannot be written ({exc.strerror or exc}); choose another") from None
    return p


class StoreLost(WorkError):
    """The store file was removed or replaced while a run was writing it; the message says where the
    runs went."""


class Store:
    """``writing``: the caller will store runs, so the file must take writes; checked on opening
    (BenchError), before any work. Every ``put`` then checks the file at ``path`` is still the file
    opened, so runs never go on into a deleted or replaced file (StoreLost)."""

    def __init__(self, out_dir: str | Path, writing: bool = False):
        self.path = Path(out_dir) / DB_NAME
        self.puts = 0  # runs this Store wrote
        writable_dir(self.path.parent)
        if self.path.exists() and not self.path.is_file():
            raise BenchError(f"result store {self.path} is not a file; move it away or choose another --out")
        self.conn = sqlite3.connect(self.path, timeout=60)
        try:
            self._open()
            if writing:
                self._probe_write()
                self._add_columns()
            self._identity = _identity(self.path)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            if writing and "readonly" in str(exc):
                raise BenchError(f"result store {self.path} cannot be written ({exc}); make it writable "
                                 f"(chmod u+w {self.path}) or choose another --out") from None
            raise BenchError(f"result store {self.path} is not a sound SQLite database ({exc}); it was left "
                             "untouched: move it away or choose another --out") from None
        except BenchError:
            self.conn.close()
            raise

    def _probe_write(self) -> None:
        """A write that is rolled back: a read-only file fails here, not after the first fit."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute("CREATE TABLE write_probe (x INTEGER)")
        finally:
            self.conn.execute("ROLLBACK")

    def check_same_file(self) -> None:
        """StoreLost, after saving what the open file holds, unless ``path`` is still the file opened."""
        try:
            same = _identity(self.path) == self._identity
        except OSError:
            same = False
        if not same:
            raise StoreLost(self._lost_message(self._rescue()))

    def _rescue(self) -> Path | None:
        """Copy the open (removed or replaced) file's runs to a new file; None if nowhere would take it."""
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        for folder in (self.path.parent, Path(tempfile.gettempdir())):
            dest = folder / f"runs.recovered-{stamp}-{os.getpid()}.sqlite"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                target = sqlite3.connect(dest)
                try:
                    self.conn.backup(target)
                finally:
                    target.close()
                return dest
            except (OSError, sqlite3.Error):
                continue
        return None

    def _lost_message(self, rescued: Path | None) -> str:
        held = self.conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        where = (f"were saved in {rescued}: move that file to {self.path} (or into another --out as "
                 f"{DB_NAME}) and run the same command again for the rest" if rescued else
                 "could not be saved anywhere")
        return (f"result store {self.path} was removed or replaced while this run was writing it; the "
                f"{held} runs the opened file held ({self.puts} of them from this run) {where}")

    def _open(self) -> None:
        """Check the file (a truncated or malformed one fails here) and create the table in a new one."""
        problems = [r for (r,) in self.conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems[:3]))
        tables = {t for (t,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "runs" not in tables:
            raise BenchError(f"{self.path} is another program's SQLite database (tables: "
                             f"{', '.join(sorted(tables))}), not a result store; it was left untouched: "
                             "choose another --out")
        self.missing: set[str] = set()  # ADDED columns an older store lacks (read as empty)
        if "runs" in tables:
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(runs)")}
            if set(COLUMNS) - have:
                raise BenchError(f"{self.path} has a runs table without the column(s) "
                                 f"{', '.join(sorted(set(COLUMNS) - have))}; it is not a store of this version "
                                 "of advae-bench and was left untouched: choose another --out")
            self.missing = set(ADDED) - have
        self.conn.execute("PRAGMA journal_mode=WAL")
        cols = ", ".join(f"{k} {v}" for k, v in {**COLUMNS, **ADDED}.items())
        with self.conn:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")

    def _add_columns(self) -> None:
        """Give an older store the ADDED columns (a writer only)."""
        with self.conn:
            for name in sorted(self.missing):
                self.conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {ADDED[name]}")
        self.missing = set()

    def close(self):
        self.conn.close()

    def ok_keys(self) -> set[str]:
        return {k for (k,) in self.conn.execute("SELECT key FROM runs WHERE status = 'ok'")}

    def timeouts(self) -> dict[str, float]:
        """``{key: limit in seconds}`` of the runs stored with status ``timeout``."""
        import re

        out = {}
        for key, error in self.conn.execute("SELECT key, error FROM runs WHERE status = 'timeout'"):
            m = re.match(r"time limit of ([0-9.e+]+) s", error or "")
            out[key] = float(m.group(1)) if m else 0.0
        return out

    def put(self, record: dict) -> None:
        row = {k: record.get(k) for k in [*COLUMNS, *(c for c in ADDED if c not in self.missing)]}
        for k in BLOBS:
            row[k] = to_blob(record.get(k))
        for k in ("params", "versions", "history"):
            if row[k] is not None and not isinstance(row[k], str):
                row[k] = json.dumps(row[k], sort_keys=True, default=repr)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.conn:  # one transaction per run
            self.conn.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})",
                              list(row.values()))
        self.puts += 1
        self.check_same_file()

    def frame(self, with_blobs: bool = False) -> pd.DataFrame:
        cols = [c for c in COLUMNS if with_blobs or c not in BLOBS]
        cols += [c if c not in self.missing else f"NULL AS {c}" for c in ADDED]
        df = pd.read_sql_query(f"SELECT {', '.join(cols)} FROM runs ORDER BY created_at", self.conn)
        if with_blobs:
            for k in BLOBS:
                df[k] = df[k].map(from_blob)
        return df

    def latest(self, with_blobs: bool = False) -> pd.DataFrame:
        """The newest run for each (spec, dataset and its checksum, protocol, seed): a run recomputed
        with other parameters or a newer method version replaces the older one in tables and plots; two
        files stored under one name are two datasets, never one."""
        df = self.frame(with_blobs)
        return df.drop_duplicates(["spec", "dataset", "dataset_sha256", "protocol", "seed"],
                                  keep="last").reset_index(drop=True)

    def datasets(self) -> dict[str, dict[str, str]]:
        """Dataset name -> {sha256: the file it was read from ("" if catalogued or not recorded)}."""
        file = "dataset_file" if "dataset_file" not in self.missing else "NULL"
        out: dict[str, dict[str, str]] = {}
        for name, sha, path in self.conn.execute(
                f"SELECT dataset, dataset_sha256, MAX(COALESCE({file}, '')) FROM runs "
                "GROUP BY dataset, dataset_sha256"):
            out.setdefault(name, {})[sha] = path
        return out


def _identity(path: Path) -> tuple[int, int]:
    """Which file ``path`` is (device and inode): a file put in its place is another file."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class RunLock:
    """One ``run`` at a time per results directory: two processes on one store would both find the
    same runs pending and compute each of them twice. The lock is an ``flock`` on ``run.lock``, which
    the operating system releases however the holder ends (even SIGKILL), so it never goes stale; the
    file keeps the holder's pid, host, start time and command line for the refusal message."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / LOCK_NAME
        self._fh = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise BenchError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (the store itself stays sound; runs may repeat)
            return self
        while True:
            fh = open(self.path, "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                fh.close()
                raise BenchError(f"results directory {self.path.parent} is in use by {holder}; wait for it to "
                                 "finish (it stores every run it computes) or choose another --out") from None
            if self._still_at_path(fh):
                break
            fh.close()  # the holder removed the file as it released it: lock the file there now
        fh.seek(0)
        fh.truncate()
        started = _dt.datetime.now().isoformat(timespec="seconds")
        fh.write(f"run process {os.getpid()} on {socket.gethostname()} (started {started}: "
                 f"{' '.join(sys.argv)[:300]})\n")
        fh.flush()
        self._fh = fh
        return self

    def _still_at_path(self, fh) -> bool:
        """Whether the file locked is the one at ``path`` (not one a releasing holder just removed)."""
        try:
            return os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def release(self) -> None:
        """Remove ``run.lock`` (while still holding it, so no one locks a removed file) and unlock."""
        if self._fh is not None:
            try:
                if self._still_at_path(self._fh):
                    self.path.unlink()
            except OSError:
                self._fh.seek(0)
                self._fh.truncate()  # cannot remove it: at least name no holder
            self._fh.close()  # closing releases the flock
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
