"""Failures that used to end in a traceback: an output directory that cannot be written, a store that is
not one. Each is one `error:` line with exit status 2, checked before anything is computed, and no
file is overwritten."""
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from bench.contract import registry
from bench.execution import store as store_module
from bench.contract.base import Detector
from bench.cli import main
from bench.evaluation.data import REPO_ROOT
from bench.execution.store import Store

CLASSICAL = str(REPO_ROOT / "configs" / "classical.toml")
QUICK_RUN = ["run", "--config", CLASSICAL, "--methods", "iforest[n_estimators=10]", "--datasets", "letter",
             "--seeds", "0", "--workers", "1", "--no-report"]


def _err(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("not a directory")
    return f


@pytest.mark.parametrize("cmd, where", [
    (QUICK_RUN, "under a file"), (QUICK_RUN, "is a file"), (["reference", "--L", "2"], "under a file"),
    (["reference", "--L", "2"], "is a file"), (["report"], "is a file"),
])
def test_out_that_cannot_be_created_is_refused_up_front(capsys, a_file, cmd, where):
    out = a_file / "sub" if where == "under a file" else a_file
    assert main([*cmd, "--out", str(out)]) == 2
    line = _err(capsys)
    assert line.startswith("error: ")
    if cmd[0] != "report":
        assert str(a_file) in line and ("is a file" in line or "not a directory" in line)
    assert a_file.read_text() == "not a directory"


def test_report_under_a_file_says_there_is_no_store(capsys, a_file):
    assert main(["report", "--out", str(a_file / "sub")]) == 2
    assert "no result store" in _err(capsys)


@pytest.mark.parametrize("cmd", ["run", "report", "reference"])
def test_out_that_cannot_be_written_is_refused_up_front(tmp_path, capsys, monkeypatch, cmd):
    """A read-only place (simulated: these tests may run as root, who may write anywhere)."""
    out = tmp_path / "ro"
    if cmd == "report":
        Store(out).close()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    argv = {"run": QUICK_RUN, "report": ["report"], "reference": ["reference", "--L", "2"]}[cmd]
    assert main([*argv, "--out", str(out)]) == 2
    line = _err(capsys)
    assert line == f"error: output directory (--out) {out} cannot be written (Permission denied); choose another"
    assert not (out / "reference.csv").exists() and not (out / "runs.csv").exists()


def _garbage(path):
    path.write_bytes(b"these are not the runs you are looking for\n" * 50)


def _truncated(path):
    Store(path.parent).close()
    assert main([*QUICK_RUN, "--seeds", "0-3", "--out", str(path.parent)]) == 0
    raw = path.read_bytes()
    for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        extra.unlink(missing_ok=True)
    path.write_bytes(raw[: len(raw) // 2])


def _foreign(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize("make, message", [
    (_garbage, "is not a sound SQLite database (file is not a database)"),
    (_truncated, "is not a sound SQLite database"),
    (_foreign, "is another program's SQLite database (tables: songs)"),
])
@pytest.mark.parametrize("cmd", ["run", "report"])
def test_a_store_that_is_not_one_is_named_and_never_overwritten(tmp_path, capsys, make, message, cmd):
    out = tmp_path / "out"
    out.mkdir()
    db = out / "runs.sqlite"
    make(db)
    before = db.read_bytes()
    capsys.readouterr()
    argv = QUICK_RUN if cmd == "run" else ["report"]
    assert main([*argv, "--out", str(out)]) == 2
    line = _err(capsys)
    assert line.startswith(f"error: ") and str(db) in line and message in line
    assert db.read_bytes() == before


def test_a_write_failure_during_work_is_one_line_and_status_1(tmp_path, capsys, monkeypatch):
    def full(self, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.Store, "put", full)
    assert main([*QUICK_RUN, "--out", str(tmp_path / "out")]) == 1
    line = _err(capsys)
    assert line.startswith("error: OSError: [Errno 28] No space left on device")
    assert line.endswith(f"while storing a run in {tmp_path / 'out' / 'runs.sqlite'}; the 0 runs this "
                         "invocation finished before it are stored there, the others are not: run the same "
                         "command again for the rest")  # true, not "results computed so far are stored"


class _Centre(Detector):
    """Squared distance to the training mean; ``action`` runs at the start of ``fit``."""
    action = None

    def __init__(self, random_state=0):
        self.random_state = random_state

    def fit(self, X):
        FITS.append(type(self).__name__)
        if self.action is not None:
            self.action()
        self.centre_ = X.mean(0)
        return self

    def anomaly_score(self, X):
        return ((X - self.centre_) ** 2).sum(1)


FITS: list = []


@pytest.fixture
def store_methods(tmp_path, monkeypatch):
    """``store-ok`` and ``store-meddle``, whose fit does ``meddle(db)`` to the run's store file."""
    out = tmp_path / "out"
    db = out / "runs.sqlite"
    FITS.clear()
    registry._load_all()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def define(meddle=None):
        registry.register("store-ok")(type("StoreOk", (_Centre,), {}))
        action = staticmethod(lambda: meddle(db)) if meddle else None
        registry.register("store-meddle")(type("StoreMeddle", (_Centre,), {"action": action}))
        return out

    return define


def _removed(db):
    db.unlink()


def _replaced(db):
    db.unlink()
    db.write_bytes(b"")  # another (empty) file under the same name


@pytest.mark.parametrize("meddle, what", [(_removed, "removed"), (_replaced, "replaced")])
def test_a_store_removed_or_replaced_under_a_run_is_an_error_that_says_where_the_runs_went(
        store_methods, capsys, meddle, what):
    """It used to end "2 ok", exit 0, over an empty store: the runs went into the deleted file."""
    out = store_methods(meddle)
    argv = [*QUICK_RUN, "--methods", "store-ok,store-meddle", "--seeds", "0-1", "--out", str(out)]
    assert main(argv) == 1
    line = _err(capsys)
    assert line.startswith(f"error: result store {out / 'runs.sqlite'} was removed or replaced while this "
                           "run was writing it; the 3 runs the opened file held (3 of them from this run) "
                           "were saved in ")
    saved = Path(line.split("were saved in ")[1].split(": move that file")[0])
    assert saved.parent == out and saved.name.startswith("runs.recovered-")
    rows = sqlite3.connect(saved).execute("SELECT spec, seed, status FROM runs ORDER BY spec, seed").fetchall()
    assert rows == [("store-meddle", 0, "ok"), ("store-ok", 0, "ok"), ("store-ok", 1, "ok")]
    assert FITS == ["StoreOk", "StoreOk", "StoreMeddle"]  # stopped at once: seed 1 was never fitted
    if what == "replaced":
        assert (out / "runs.sqlite").read_bytes() == b""  # the file put in its place is left alone


def test_a_read_only_store_is_refused_before_the_first_fit(store_methods, capsys, monkeypatch):
    """It used to compute everything, then fail saying "results computed so far are stored" (none were)."""
    out = store_methods()
    Store(out).close()
    db = out / "runs.sqlite"
    db.chmod(0o444)
    if os.geteuid() == 0:  # root writes to a mode-444 file: open it as SQLite opens one it cannot write
        real = sqlite3.connect
        monkeypatch.setattr(store_module.sqlite3, "connect",
                            lambda path, **kw: real(f"file:{path}?mode=ro", uri=True, **kw))
    assert main([*QUICK_RUN, "--methods", "store-ok", "--out", str(out)]) == 2
    assert _err(capsys) == (f"error: result store {db} cannot be written (attempt to write a readonly "
                            f"database); make it writable (chmod u+w {db}) or choose another --out")
    assert FITS == []
