"""`run` exits 0 only when every run of the invocation ended ok or degenerate, 1 when any failed, 2 on
bad input before anything ran, 130 on interrupt; its summary lists this invocation's runs only."""
import os
import signal
import time

import numpy as np
import pytest

from bench.contract import registry
from bench.contract.base import Detector
from bench.cli import main
from bench.evaluation.data import REPO_ROOT

CLASSICAL = str(REPO_ROOT / "configs" / "classical.toml")


class _Fake(Detector):
    mode = "ok"

    def __init__(self, random_state=0):
        self.random_state = random_state

    def fit(self, X):
        if self.mode == "raise":
            raise ValueError("boom")
        if self.mode == "interrupt":  # the user's Ctrl-C arrives while this method trains
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        self.center_ = X.mean(0)
        return self

    def anomaly_score(self, X):
        if self.mode == "wide":  # one column too many
            return np.ones((len(X), 2))
        return np.ones(len(X)) if self.mode == "const" else ((X - self.center_) ** 2).sum(1)


@pytest.fixture(autouse=True)
def fakes():
    for mode in ("ok", "raise", "const", "interrupt", "wide"):
        registry.register(f"exit-{mode}")(type(f"Exit_{mode}", (_Fake,), {"mode": mode}))
    yield
    for mode in ("ok", "raise", "const", "interrupt", "wide"):
        registry._REGISTRY.pop(f"exit-{mode}", None)


def _run(out, methods, seeds="0"):
    return main(["run", "--config", CLASSICAL, "--methods", methods, "--datasets", "letter", "--seeds", seeds,
                 "--workers", "1", "--no-report", "--out", str(out)])


def test_ok_and_degenerate_runs_exit_0(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-const") == 0
    out = capsys.readouterr().out  # the summary is on stdout, progress and notes on stderr
    assert "1 ok, 0 failed, 1 degenerate" in out and "degenerate exit-const / letter / seed 0" in out


def test_a_failed_run_exits_1_and_is_listed(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-raise", "0-1") == 1
    captured = capsys.readouterr()
    assert "exit-raise / letter / seed 1: ValueError: boom" in captured.out
    assert "2 runs failed (listed above, errors in runs.csv): exit status 1" in captured.err


def test_the_summary_lists_this_invocations_runs_only(tmp_path, capsys):
    assert _run(tmp_path, "exit-raise") == 1
    capsys.readouterr()
    assert _run(tmp_path, "exit-ok") == 0  # the earlier failure stays in the store ...
    captured = capsys.readouterr()
    err = captured.err + captured.out
    assert "exit-raise" not in err and "boom" not in err  # ... but is not this run's to report


def test_interrupt_exits_130_and_keeps_finished_runs(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-interrupt") == 130
    assert "interrupted: finished runs are stored" in capsys.readouterr().err
    from bench.execution.store import Store
    assert list(Store(tmp_path).frame().spec) == ["exit-ok"]


def test_bad_input_exits_2_before_anything_ran(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-nope") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: unknown method 'exit-nope'")
    assert not (tmp_path / "runs.sqlite").exists()


def test_scores_of_the_wrong_shape_are_reported_with_the_shape_returned(tmp_path, capsys):
    """They were reported flattened: "(2n,)" for an (n, 2) array."""
    from bench.execution.store import Store

    assert _run(tmp_path, "exit-wide") == 1
    error = Store(tmp_path).frame().error[0]
    n_train, n_test = (int(v) for v in error.split("expected (")[1].replace(",)", "").split("/("))
    assert error == f"scores have shapes ({n_train}, 2)/({n_test}, 2), expected ({n_train},)/({n_test},)"


def test_the_summary_is_on_stdout_in_words_that_count_right_and_the_lock_goes(tmp_path, capsys):
    """`run` printed nothing on stdout, "1 methods", claimed "wrote ... compare/" when nothing was
    compared, and left run.lock behind."""
    assert main(["run", "--config", CLASSICAL, "--methods", "exit-ok", "--datasets", "letter", "--seeds", "0",
                 "--workers", "1", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "experiment classical: 1 method x 1 dataset x 1 seed, protocol paper" in captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "1 run: 0 already stored, 1 ok, 0 failed, 0 degenerate"
    assert lines[1].startswith("cpu utilisation: ")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in (
        "runs.sqlite", "runs.sqlite-wal", "runs.sqlite-shm", "order.json", "executions.jsonl")]
    assert lines[-1] == (f"wrote {len(written)} files in {tmp_path}: runs.csv, tables/, figures/, "
                         "leaderboard/, index.html")
    assert not (tmp_path / "compare").exists()  # exit-ok is not in the paper: nothing to compare
    assert not (tmp_path / "run.lock").exists()
    assert _run(tmp_path, "exit-raise") == 1  # however it ends
    assert not (tmp_path / "run.lock").exists()


def test_a_lock_is_taken_again_after_its_holder_removed_it(tmp_path):
    from bench.execution.store import RunLock

    first = RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / "run.lock").exists()
    second = RunLock(tmp_path).acquire()
    assert (tmp_path / "run.lock").read_text().startswith(f"run process {os.getpid()} ")
    with pytest.raises(Exception, match="is in use by run process"):
        RunLock(tmp_path).acquire()
    second.release()


def test_a_sweep_without_a_config_runs_the_sweep_alone(tmp_path, capsys, monkeypatch):
    """It added the sweep to the default roster (18 methods)."""
    from bench.execution import runner

    seen = []

    def fake(exp, out, *args, **kwargs):
        seen.append(exp)
        return {"total": 0, "skipped": 0, "ok": 0, "failed": 0, "degenerate": 0, "keys": []}

    monkeypatch.setattr(runner, "run_experiment", fake)
    argv = ["run", "--sweep", "lof:n_neighbors=5,10", "--workers", "1", "--no-report", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert seen[-1].methods == ("lof[n_neighbors=5]", "lof[n_neighbors=10]")
    assert seen[-1].seeds == (0, 1, 2, 3, 4) and len(seen[-1].datasets) == 5  # paper.toml's
    assert ("note: --sweep without --config or --methods runs the sweep alone, with the datasets, seeds and "
            "overrides of configs/paper.toml") in capsys.readouterr().err
    assert main([*argv, "--config", CLASSICAL]) == 0  # with a config: its methods and the sweep
    assert seen[-1].methods[-2:] == ("lof[n_neighbors=5]", "lof[n_neighbors=10]") and len(seen[-1].methods) > 2


@pytest.mark.parametrize("argv", [
    ["run", "--methods", "pca", "--datasets", "cardio", "--seeds", "0", "--out", "results/paper"],
    ["report", "--out", "results/sensitivity"],
    ["leaderboard", "--results", "results/sensitivity", "--out", "results/lb"],
])
def test_nothing_writes_into_results_which_the_project_publishes(argv, capsys):
    before = sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "results").rglob("*"))
    assert main([a if not a.startswith("results/") else str(REPO_ROOT / a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ") and "inside results/" in err[-1]
    assert sorted(p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "results").rglob("*")) == before
