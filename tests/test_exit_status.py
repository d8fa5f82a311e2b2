"""`run` exits 0 only when every run of the invocation ended ok or degenerate, 1 when any failed, 2 on
bad input before anything ran, 130 on interrupt; its summary lists this invocation's runs only."""
import os
import signal
import time

import numpy as np
import pytest

from bench import registry
from bench.base import Detector
from bench.cli import main
from bench.data import REPO_ROOT

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
    err = capsys.readouterr().err
    assert "1 ok, 0 failed, 1 degenerate" in err and "degenerate exit-const / letter / seed 0" in err


def test_a_failed_run_exits_1_and_is_listed(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-raise", "0-1") == 1
    err = capsys.readouterr().err
    assert "exit-raise / letter / seed 1: ValueError: boom" in err
    assert "2 runs failed (listed above, errors in runs.csv): exit status 1" in err


def test_the_summary_lists_this_invocations_runs_only(tmp_path, capsys):
    assert _run(tmp_path, "exit-raise") == 1
    capsys.readouterr()
    assert _run(tmp_path, "exit-ok") == 0  # the earlier failure stays in the store ...
    err = capsys.readouterr().err
    assert "exit-raise" not in err and "boom" not in err  # ... but is not this run's to report


def test_interrupt_exits_130_and_keeps_finished_runs(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-interrupt") == 130
    assert "interrupted: finished runs are stored" in capsys.readouterr().err
    from bench.store import Store
    assert list(Store(tmp_path).frame().spec) == ["exit-ok"]


def test_bad_input_exits_2_before_anything_ran(tmp_path, capsys):
    assert _run(tmp_path, "exit-ok,exit-nope") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: unknown method 'exit-nope'")
    assert not (tmp_path / "runs.sqlite").exists()


def test_scores_of_the_wrong_shape_are_reported_with_the_shape_returned(tmp_path, capsys):
    """They were reported flattened: "(2n,)" for an (n, 2) array."""
    from bench.store import Store

    assert _run(tmp_path, "exit-wide") == 1
    error = Store(tmp_path).frame().error[0]
    n_train, n_test = (int(v) for v in error.split("expected (")[1].replace(",)", "").split("/("))
    assert error == f"scores have shapes ({n_train}, 2)/({n_test}, 2), expected ({n_train},)/({n_test},)"
