"""Runner and store: failure isolation, resume after an interrupt, atomic writes, report
regeneration, determinism whatever the worker count."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.reporting import outputs, runtable
from bench.contract import registry
from bench.execution import plan, progress, runner
from bench.contract.base import Detector
from bench.execution.config import Experiment
from bench.evaluation.data import REPO_ROOT
from bench.execution.store import Store

pytestmark = pytest.mark.integration


class _Fake(Detector):
    mode = "ok"

    def __init__(self, random_state=0):
        self.random_state = random_state

    def fit(self, X):
        if self.mode == "raise":
            raise ValueError("boom")
        if self.mode == "interrupt" and self.random_state == 2:  # the user's Ctrl-C during this fit
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        self.center_ = X.mean(0)
        return self

    def anomaly_score(self, X):
        s = ((X - self.center_) ** 2).sum(1)
        if self.mode == "nan":
            s[0] = np.nan
        if self.mode == "const":
            s = np.ones(len(X))
        return s


@pytest.fixture
def fakes():
    made = {}
    for mode in ("ok", "raise", "nan", "const", "interrupt"):
        cls = type(f"Fake_{mode}", (_Fake,), {"mode": mode})
        registry.register(f"test-{mode}")(cls)
        made[mode] = cls
    yield made
    for mode in made:
        registry._REGISTRY.pop(f"test-{mode}", None)


def _exp(methods, seeds=(0, 1), datasets=("letter",)):
    return Experiment(name="t", protocol="paper", seeds=tuple(seeds), threshold="kde", alpha=0.1,
                      datasets=tuple(datasets), methods=tuple(methods))


def test_failures_are_isolated_and_recorded(tmp_path, fakes):
    exp = _exp(["test-raise", "test-nan", "test-const", "test-ok"])
    counts = runner.run_experiment(exp, tmp_path, workers=1, progress=False)
    assert len(counts.pop("keys")) == 8
    use = counts.pop("utilisation")  # the groups' CPU over cores x wall time (bench/execution/runner.py)
    assert use["cores"] == 1 and use["wall_seconds"] > 0 and 0 <= use["cpu_seconds"]
    assert use["executor"] == "serial"
    assert counts == {"total": 8, "skipped": 0, "ok": 2, "failed": 4, "degenerate": 2, "timeout": 0}
    df = Store(tmp_path).frame().set_index(["spec", "seed"])
    assert df.loc[("test-raise", 0), "status"] == "failed"
    assert "ValueError: boom" in df.loc[("test-raise", 0), "error"]
    assert df.loc[("test-nan", 1), "status"] == "failed"
    assert "non-finite" in df.loc[("test-nan", 1), "error"]
    assert df.loc[("test-const", 0), "status"] == "degenerate"
    ok = df.loc[("test-ok", 0)]
    assert ok.status == "ok" and 0 <= ok.auc <= 1 and np.isfinite(ok.threshold)
    assert ok.dataset_sha256 == "574cf04d1a9da56f17e737c89c1fc7ec9163723ee59b461dd68364af346d000f"
    assert '"torch"' in ok.versions and ok.device == "cpu" and ok.fit_seconds >= 0
    lines = outputs.summary_lines(tmp_path)
    assert lines[0].startswith("8 runs stored:") and "failed 4" in lines[0]
    assert any("test-raise / letter / seed 0: ValueError: boom" in line for line in lines)
    assert not any(line.rstrip().endswith("nan") for line in lines)  # no missing error printed as "nan"


def test_resume_after_interrupt(tmp_path, fakes):
    exp = _exp(["test-interrupt"], seeds=range(4))
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(exp, tmp_path, workers=1, progress=False)
    stored = Store(tmp_path).frame()
    assert sorted(stored.seed) == [0, 1] and set(stored.status) == {"ok"}
    fakes["interrupt"].mode = "ok"
    counts = runner.run_experiment(exp, tmp_path, workers=1, progress=False)
    assert counts["skipped"] == 2 and counts["ok"] == 2
    assert sorted(Store(tmp_path).frame().seed) == [0, 1, 2, 3]
    # --force recomputes everything
    assert runner.run_experiment(exp, tmp_path, workers=1, force=True, progress=False)["ok"] == 4


def test_kill_mid_grid_leaves_a_sound_store(tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / "run_bench.py"), "run", "--config",
           str(REPO_ROOT / "configs" / "classical.toml"), "--methods", "iforest[n_estimators=300]",
           "--datasets", "optdigits", "--seeds", "0-40", "--workers", "1", "--out", str(tmp_path),
           "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "runs.sqlite"
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.3)
        if db.exists() and len(Store(tmp_path).frame()) >= 2:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = con.execute("SELECT count(*) FROM runs WHERE status='ok'").fetchone()[0]
    con.close()
    assert 2 <= n < 41
    exp = _exp(["iforest[n_estimators=300]"], seeds=range(41), datasets=["optdigits"])
    keys = {r.key for r in plan.expand(exp)}
    assert Store(tmp_path).ok_keys() <= keys  # what was stored is what a resume will skip


def test_same_scores_whatever_the_worker_count(tmp_path):
    exp = _exp(["iforest", "lof"], seeds=(0, 1))
    runner.run_experiment(exp, tmp_path / "w1", workers=1, progress=False)
    runner.run_experiment(exp, tmp_path / "w2", workers=2, progress=False)
    a = Store(tmp_path / "w1").frame(with_blobs=True).sort_values("key").reset_index(drop=True)
    b = Store(tmp_path / "w2").frame(with_blobs=True).sort_values("key").reset_index(drop=True)
    assert list(a.key) == list(b.key) and len(a) == 4
    for x, y in zip(a.test_scores, b.test_scores):
        np.testing.assert_array_equal(x, y)
    # iforest's seed matters, so its two seeds differ
    f = a[a.spec == "iforest"]
    assert not np.array_equal(f.test_scores.iloc[0], f.test_scores.iloc[1])


def test_report_regenerates_from_the_store(tmp_path, fakes):
    exp = _exp(["pca", "test-ok", "test-raise"], seeds=(0, 1))
    runner.run_experiment(exp, tmp_path, workers=1, progress=False)
    first = outputs.build_report(tmp_path, method_order=exp.methods)
    names = {p.relative_to(tmp_path).as_posix() for p in first}
    for must in ("runs.csv", "tables/ap.csv", "tables/ap.md", "tables/ap.tex", "tables/auc.md",
                 "figures/letter-pr.png", "figures/letter-roc.png"):
        assert must in names
    csv = (tmp_path / "runs.csv").read_text()
    md = (tmp_path / "tables" / "ap.md").read_text()
    assert "test-raise" in md and "failed" in md
    for p in first:
        if p.name != "runs.csv":
            p.unlink()
    second = outputs.build_report(tmp_path, method_order=exp.methods)
    assert {p.relative_to(tmp_path).as_posix() for p in second} == names
    assert (tmp_path / "runs.csv").read_text() == csv
    assert (tmp_path / "tables" / "ap.md").read_text() == md
    # a different threshold policy recomputes F1 from the stored scores, without re-training, and
    # writes beside the default outputs instead of over them
    outputs.build_report(tmp_path, policy="percentile")
    import pandas as pd
    runs = pd.read_csv(tmp_path / "tables" / "percentile" / "runs.csv")
    assert set(runs[runs.status == "ok"].threshold_policy) == {"percentile"}
    assert "percentile" in (tmp_path / "tables" / "percentile" / "f1.md").read_text().splitlines()[0]
    assert (tmp_path / "runs.csv").read_text() == csv
    assert (tmp_path / "tables" / "ap.md").read_text() == md


def test_report_keeps_the_experiment_order(tmp_path, fakes):
    """``report`` without a config lays the table out in the run's method order, not in the order runs
    happened to finish; a later run with more methods appends to it."""
    runner.run_experiment(_exp(["pca", "test-ok"], seeds=(0,)), tmp_path, workers=1, progress=False)
    runtable.remember_order(tmp_path, ["test-ok", "pca"], ["letter"])
    runtable.remember_order(tmp_path, ["pca", "test-const"], ["letter"])
    outputs.build_report(tmp_path)
    rows = [line.split("|")[1].strip() for line in (tmp_path / "tables" / "auc.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| method") and not line.startswith("| :")]
    assert rows == ["test-ok", "pca"]
    runner.run_experiment(_exp(["test-const"], seeds=(0,)), tmp_path, workers=1, progress=False)
    outputs.build_report(tmp_path)
    rows = [line.split("|")[1].strip() for line in (tmp_path / "tables" / "auc.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| method") and not line.startswith("| :")]
    assert rows == ["test-ok", "pca", "test-const"]


def test_order_matches_specs_however_spelt():
    import pandas as pd
    df = pd.DataFrame({"spec": ["lof", "advae[generator_hinge=false,transformer=false]", "advae"]})
    wanted = ["advae", "advae[transformer=false, generator_hinge=false]", "lof"]
    assert runtable._order(df, "spec", wanted) == ["advae", "advae[generator_hinge=false,transformer=false]",
                                                  "lof"]


def test_progress_advances_by_estimated_work_not_by_runs():
    """A grid that starts with its longest group: after that one group the bar stands at its share
    of the estimated work (most of it), not at 1 of N runs."""
    from bench.execution.plan import DEFAULT_SECONDS_PER_RUN, DEFAULT_SECONDS_PER_UNIT, Task, progress_weights

    runs = plan.expand(_exp(["hbos"], seeds=(0, 1, 2)))
    tasks = [Task(0, runs[:1], None, estimate=None, units=1e9),  # a deep group, cost model only
             Task(1, runs[1:2], None, estimate=120.0, units=5.0),  # timed before: its timing wins
             Task(2, runs[2:], None, estimate=None, units=0.0)]  # classical, never timed
    w = progress_weights(tasks)
    assert w == {0: 1e9 * DEFAULT_SECONDS_PER_UNIT, 1: 120.0, 2: DEFAULT_SECONDS_PER_RUN}
    assert w[0] / sum(w.values()) > 0.8


def test_cpu_seconds_by_method_from_the_execution_log(tmp_path, fakes):
    exp = _exp(["test-ok", "test-raise"], seeds=(0, 1, 2))
    runner.run_experiment(exp, tmp_path, workers=1, progress=False)
    t = progress.execution_summary(tmp_path)
    assert set(t.spec) == {"test-ok", "test-raise"} and t.runs.sum() == 6
    assert (t.cpu_seconds >= 0).all() and t.cpu_share.sum() == pytest.approx(1.0)
    (tmp_path / "executions.jsonl").open("a").write('{"torn line')  # a killed driver's last write
    assert progress.execution_summary(tmp_path).runs.sum() == 6
    from bench.reporting.outputs import _write_timings

    csv, md = _write_timings(tmp_path)
    import pandas as pd

    assert "s of CPU in" in md.read_text() and len(pd.read_csv(csv)) == 2
    assert progress.execution_summary(tmp_path / "nowhere").empty


def test_progress_moves_while_a_group_trains():
    """Between results the bar advances by the running groups' elapsed seconds (at most 95 % of
    their weight); a finished group counts whole and frees its slot for the next in order."""
    from types import SimpleNamespace

    from bench.execution.plan import Task
    from bench.execution.progress import WorkProgress

    runs = plan.expand(_exp(["hbos"], seeds=(0, 1, 2)))
    tasks = [Task(i, [r], None) for i, r in enumerate(runs)]
    bar = SimpleNamespace(n=0.0, total=600.0, refresh=lambda: None)
    work = WorkProgress(bar, tasks, {0: 300.0, 1: 200.0, 2: 100.0}, slots=2)
    work.start(ticker=False)
    t0 = min(work.running.values())
    assert sorted(work.running) == [0, 1]  # two slots: the first two groups run
    assert work.position(t0 + 50) == pytest.approx(100.0)  # 50 s into each
    assert work.position(t0 + 1000) == pytest.approx(0.95 * 500)  # never past 95 % of a group
    work.finished(tasks[1])
    assert sorted(work.running) == [0, 2] and work.done == 200.0
    assert bar.n >= 200.0
    work.finished(tasks[0])
    work.finished(tasks[2])
    assert work.position() == pytest.approx(600.0) and not work.running
