"""The Dask executor on a LocalCluster of two worker processes: the same scores as the local executors,
every run stored exactly once when a worker is killed mid-grid, a one-line error for a scheduler that
does not answer, and the recipe of docs/running.md (`dask scheduler`, `dask worker ADDRESS`, `run --executor dask
--scheduler ADDRESS`) end to end. Longest-first ordering is tested here too (it is the executors'
order of submission)."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench import BenchError
from bench.evaluation import data
from bench.contract import registry
from bench.execution import plan, runner
from bench.contract.base import Detector
from bench.execution.config import Experiment
from bench.evaluation.data import REPO_ROOT
from bench.execution.executors import DaskExecutor, local_executor
from bench.execution.store import Store

distributed = pytest.importorskip("distributed")  # .ci/run installs it and refuses to run without it

PID_ENV = "TEST_DASK_PID_DIR"


class Sleep(Detector):
    """Writes ``<pid>-<seed>`` into $TEST_DASK_PID_DIR, sleeps ``seconds``, scores by distance to the
    mean. Defined in this test module, so a Dask worker gets it by value (as a --plugin method)."""

    def __init__(self, seconds=2.0, random_state=0):
        self.seconds, self.random_state = seconds, random_state

    def fit(self, X):
        open(os.path.join(os.environ[PID_ENV], f"{os.getpid()}-{self.random_state}"), "w").close()
        time.sleep(self.seconds)
        self.center_ = X.mean(0)
        return self

    def anomaly_score(self, X):
        return ((X - self.center_) ** 2).sum(1)


def _exp(methods, seeds=(0, 1), datasets=("letter",)):
    return Experiment(name="t", protocol="paper", seeds=tuple(seeds), threshold="kde", alpha=0.1,
                      datasets=tuple(datasets), methods=tuple(methods))


@pytest.fixture(scope="module")
def pid_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pids")
    os.environ[PID_ENV] = str(d)  # before the cluster starts: its workers inherit the environment
    registry.register("test-dask-sleep")(Sleep)
    yield d
    registry._REGISTRY.pop("test-dask-sleep", None)
    os.environ.pop(PID_ENV, None)


@pytest.fixture(scope="module")
def cluster(pid_dir):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as c:
        yield c


def _dask(cluster):
    return DaskExecutor(cluster.scheduler_address).start()


def _frame(path):
    store = Store(path)
    try:
        return store.frame(with_blobs=True).sort_values("key").reset_index(drop=True)
    finally:
        store.close()


@pytest.mark.integration
def test_same_scores_serial_pool_and_dask(tmp_path, cluster):
    exp = _exp(["iforest", "pca", "ae[n_iter=40]"], seeds=(0, 1))
    runner.run_experiment(exp, tmp_path / "serial", workers=1, progress=False)
    runner.run_experiment(exp, tmp_path / "pool", progress=False, executor=local_executor(2))
    ex = _dask(cluster)
    try:
        counts = runner.run_experiment(exp, tmp_path / "dask", progress=False, executor=ex)
        again = runner.run_experiment(exp, tmp_path / "dask", progress=False, executor=ex)
    finally:
        ex.close()
    assert counts["ok"] == 6 and counts["utilisation"]["cores"] == 2
    assert again["skipped"] == 6 and again["ok"] == 0  # a second run resumes from the store
    a, b, c = (_frame(tmp_path / d) for d in ("serial", "pool", "dask"))
    assert len(a) == 6 and list(a.key) == list(b.key) == list(c.key)
    assert set(a.status) == set(c.status) == {"ok"}
    for x, y, z in zip(a.test_scores, b.test_scores, c.test_scores):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert list(a.auc) == list(c.auc)
    assert set(c.device) == {"cpu"}
    # one line per group in executions.jsonl, each naming the worker process that ran it
    lines = [json.loads(s) for s in (tmp_path / "dask" / plan.EXECUTIONS).read_text().splitlines()]
    assert sorted(s for line in lines for s in line["seeds"]) == [0, 0, 0, 1, 1, 1]
    assert all(line["executor"].startswith("dask") and ":" in line["worker"] for line in lines)


@pytest.mark.integration
def test_a_worker_killed_mid_grid_and_every_run_stored_once(tmp_path, cluster, pid_dir):
    for f in pid_dir.iterdir():
        f.unlink()
    exp = _exp(["test-dask-sleep[seconds=3]"], seeds=range(6))
    workers = set(cluster.scheduler_info["workers"])
    pids = _dask_pids(cluster)
    killed = []

    def kill_one():  # the first worker to start a group is killed while it sleeps in fit
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for f in pid_dir.iterdir():
                pid = int(f.name.split("-")[0])
                if pid in pids:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, int(f.name.split("-")[1])))
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one)
    killer.start()
    ex = _dask(cluster)
    try:
        counts = runner.run_experiment(exp, tmp_path, progress=False, executor=ex)
    finally:
        ex.close()
        killer.join()
    assert killed, "no worker started a group"
    pid, seed = killed[0]
    assert counts["ok"] == 6 and counts["failed"] == 0
    df = _frame(tmp_path)
    assert len(df) == 6 and df.key.is_unique and sorted(df.seed) == list(range(6))
    assert set(df.status) == {"ok"}
    # the killed worker's group ran again elsewhere and was stored once
    ran = [f.name for f in pid_dir.iterdir() if f.name.endswith(f"-{seed}")]
    assert len(ran) >= 2 and f"{pid}-{seed}" in ran
    lines = (tmp_path / plan.EXECUTIONS).read_text().splitlines()
    assert sorted(s for line in lines for s in json.loads(line)["seeds"]) == list(range(6))
    assert str(pid) not in {json.loads(line)["worker"].split(":")[1] for line in lines
                            if seed in json.loads(line)["seeds"]}
    assert workers  # the cluster had its two workers to begin with


def _dask_pids(cluster) -> set[int]:
    with distributed.Client(cluster, set_as_default=False) as client:
        return set(client.run(os.getpid).values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_one_error_line(tmp_path, capsys):
    from bench.cli import main

    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.time()
    with pytest.raises(BenchError, match=f"no Dask scheduler answers at {address} within 2 s"):
        DaskExecutor(address, timeout=2).start()
    assert time.time() - t0 < 20  # bounded by the timeout (generous for a loaded machine), no hang
    out = tmp_path / "out"
    rc = main(["run", "--config", str(REPO_ROOT / "configs" / "classical.toml"), "--methods", "pca",
               "--datasets", "letter", "--seeds", "0", "--executor", "dask", "--scheduler", address,
               "--out", str(out), "--no-report"])
    err = capsys.readouterr().err
    assert rc == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: no Dask scheduler answers at {address}")
    assert "Traceback" not in err
    assert not (out / "runs.sqlite").exists()  # refused before any work


def test_scheduler_without_dask_executor_is_refused(tmp_path, capsys):
    from bench.cli import main

    rc = main(["run", "--methods", "pca", "--datasets", "letter", "--seeds", "0",
               "--scheduler", "tcp://127.0.0.1:8786", "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: --scheduler needs --executor dask"


def _dask_cli() -> list[str]:
    exe = Path(sys.executable).parent / "dask"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dask"]


@pytest.mark.integration
def test_the_readme_recipe_scheduler_worker_run(tmp_path):
    """docs/running.md, "Running on several machines (Dask)": `dask scheduler`, `dask worker ADDRESS`, then
    `run --executor dask --scheduler ADDRESS`; here all three on this machine."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([*_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([*_dask_cli(), "worker", address, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard"], env=env, cwd=tmp_path,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_workers(address, 2)
        out = tmp_path / "out"
        run = subprocess.run([sys.executable, str(REPO_ROOT / "run_bench.py"), "run", "--config",
                              str(REPO_ROOT / "configs" / "classical.toml"), "--methods", "iforest,pca",
                              "--datasets", "letter", "--seeds", "0-1", "--executor", "dask",
                              "--scheduler", address, "--out", str(out), "--no-report"],
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        assert "4 runs: 0 already stored, 4 ok" in run.stdout
        line = [s for s in run.stdout.splitlines() if s.startswith("cpu utilisation:")]
        assert len(line) == 1 and "of 2 cores" in line[0] and f"scheduler {address}" in line[0]
        df = _frame(out)
        assert len(df) == 4 and set(df.status) == {"ok"}
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for_workers(address: str, n: int, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with distributed.Client(address, timeout=5, set_as_default=False) as client:
                client.wait_for_workers(n, timeout=max(1, deadline - time.time()))
                return
        except (OSError, TimeoutError):
            time.sleep(1)
    raise AssertionError(f"{n} Dask workers did not join {address} within {timeout} s")


# --- longest first ------------------------------------------------------------------------------

@pytest.fixture
def costed():
    made = {}
    for name, cost in (("test-dear", 8.0), ("test-cheap", 1.0), ("test-free", None)):
        attrs = {"__init__": Sleep.__init__, "fit": Sleep.fit, "anomaly_score": Sleep.anomaly_score}
        if cost is not None:
            attrs["cost"] = cost
        cls = type(name.replace("-", "_"), (Detector,), attrs)
        made[name] = registry.register(name)(cls)
    yield made
    for name in made:
        registry._REGISTRY.pop(name, None)


def _groups(methods, datasets=("letter",)):
    runs = plan.expand(_exp(methods, seeds=(0,), datasets=datasets))
    groups = plan.make_groups(runs)
    ds = {plan._data_ref(r): data.load(r.dataset) for r in runs}
    return groups, ds


def test_longest_first_from_declared_costs_then_from_stored_timings(costed):
    groups, ds = _groups(["test-free", "test-cheap", "test-dear"], datasets=("letter", "pendigits"))
    order = [(t.group[0].spec, t.group[0].dataset) for t in plan.longest_first(groups, ds, {})]
    # cost x (1 + d / 50): letter (32 features) before pendigits (16); no declared cost: last, config order
    assert order == [("test-dear", "letter"), ("test-dear", "pendigits"), ("test-cheap", "letter"),
                     ("test-cheap", "pendigits"), ("test-free", "letter"), ("test-free", "pendigits")]
    # a stored timing wins over the cost model; the others are scaled by seconds per cost unit
    sig = {(g[0].spec, g[0].dataset): plan._signature(g[0].method, g[0].spec, g[0].params_json,
                                                        g[0].dataset, g[0].protocol) for g in groups}
    units = {(g[0].spec, g[0].dataset): plan.cost_units(g, ds[plan._data_ref(g[0])]) for g in groups}
    tasks = plan.longest_first(groups, ds, {sig[("test-free", "letter")]: 1e9,
                                              sig[("test-dear", "letter")]: units[("test-dear", "letter")]})
    order = [(t.group[0].spec, t.group[0].dataset) for t in tasks]
    assert order[0] == ("test-free", "letter") and order[-1] == ("test-free", "pendigits")
    assert order[1:5] == [("test-dear", "letter"), ("test-dear", "pendigits"), ("test-cheap", "letter"),
                          ("test-cheap", "pendigits")]
    est = {(t.group[0].spec, t.group[0].dataset): t.estimate for t in tasks}
    # 1 unit = 1 s, calibrated on test-dear's stored timing
    assert est[("test-cheap", "pendigits")] == pytest.approx(units[("test-cheap", "pendigits")])


def test_an_iterative_method_without_a_declared_cost_counts_as_ae(costed):
    class Iterative(Detector):
        def __init__(self, n_iter=40, random_state=0):
            self.n_iter, self.random_state = n_iter, random_state

    registry.register("test-iter")(Iterative)
    try:
        groups, ds = _groups(["test-iter", "test-free"])
        (g_iter,), (g_free,) = [g for g in groups if g[0].spec == "test-iter"], \
            [g for g in groups if g[0].spec == "test-free"]
        d = ds[plan._data_ref(g_iter[0])].X.shape[1]
        assert plan.cost_units(g_iter, ds[plan._data_ref(g_iter[0])]) == 1.0 * 40 * (1 + d / 50)
        assert plan.cost_units(g_free, ds[plan._data_ref(g_free[0])]) == 0.0
    finally:
        registry._REGISTRY.pop("test-iter", None)


def test_timings_come_from_the_store_and_executions_jsonl(tmp_path):
    from _stores import record

    store = Store(tmp_path)
    try:
        rec = record("iforest", "letter", 0, 2.0)
        rec.update(params=json.dumps({"n_estimators": 100, "random_state": 0}), fit_seconds=3.0,
                   score_seconds=0.5, group_size=1)
        store.put(rec)
        sig = plan._signature("iforest", "iforest", json.dumps({"n_estimators": 100}), "letter", "paper")
        assert plan.stored_timings(store, tmp_path) == {sig: 3.5}
        with open(tmp_path / plan.EXECUTIONS, "w") as fh:
            fh.write(json.dumps({"signature": sig, "seconds": 10.0, "runs": 2}) + "\n")
            fh.write('{"signature": "torn')  # a driver killed mid-write leaves a torn line
        assert plan.stored_timings(store, tmp_path) == {sig: 5.0}
    finally:
        store.close()


# --- the driver's fate: SIGTERM and Ctrl-C stop a LocalCluster's workers ----------------------

@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_of_a_dask_run_leaves_no_worker(tmp_path, sig):
    from test_processes import alive, gone_within, start, wait_for_workers

    proc, pids = start(tmp_path, extra=["--executor", "dask"])
    try:
        workers = wait_for_workers(pids, 2, timeout=600)  # a LocalCluster starts slowly on a busy machine
        assert proc.pid not in workers and all(alive(p) for p in workers)
        if sig == signal.SIGINT:  # Ctrl-C in a terminal: the whole process group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=300)
        assert gone_within(workers, 60), f"workers {[p for p in workers if alive(p)]} outlived the run"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert "finished runs are stored" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
