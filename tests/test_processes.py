"""Worker processes and the parent's fate: SIGKILL or SIGTERM of the parent leaves no worker behind, and
a worker killed from outside ends the run with one error line. The runs use a method that sleeps in
fit, registered by a driver script: spawned workers import the driver (as __mp_main__) and so know it
too, without an entry point."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.evaluation.data import REPO_ROOT

DRIVER = textwrap.dedent(f"""
    import os, sys, time
    sys.path.insert(0, {str(REPO_ROOT)!r})
    import numpy as np
    from bench.contract.base import Detector
    from bench.contract.registry import register

    PIDS = os.environ["TEST_PID_DIR"]

    @register("test-sleep")
    class Sleep(Detector):
        \"\"\"Writes its worker's pid, then sleeps for ``seconds`` (or dies at once if ``die``).\"\"\"

        def __init__(self, seconds=120.0, die=False, random_state=0):
            self.seconds, self.die, self.random_state = seconds, die, random_state

        def fit(self, X):
            open(os.path.join(PIDS, f"{{os.getpid()}}-{{self.random_state}}"), "w").close()
            if self.die:
                os._exit(9)
            time.sleep(self.seconds)
            self.center_ = X.mean(0)
            return self

        def anomaly_score(self, X):
            return ((X - self.center_) ** 2).sum(1)

    if __name__ == "__main__":
        from bench.cli import main
        sys.exit(main(sys.argv[1:]))
""")


def start(tmp_path: Path, methods="test-sleep", seeds="0-1", workers="2", out="out", extra=()):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    pids = tmp_path / "pids"
    pids.mkdir(exist_ok=True)
    cmd = [sys.executable, str(driver), "run", "--config", str(REPO_ROOT / "configs" / "classical.toml"),
           "--methods", methods, "--datasets", "letter", "--seeds", seeds, "--workers", workers,
           "--out", str(tmp_path / out), "--no-report", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TEST_PID_DIR": str(pids)},
                            start_new_session=bool(extra))  # own group: tests/test_dask.py sends Ctrl-C to it
    return proc, pids


def wait_for_workers(pids: Path, n: int, timeout=120) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted({int(p.name.split("-")[0]) for p in pids.iterdir()})
        if len(found) >= n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{n} workers did not start within {timeout} s")


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_no_worker_outlives_its_parent(tmp_path, sig):
    proc, pids = start(tmp_path)
    workers = wait_for_workers(pids, 2)
    assert proc.pid not in workers and all(alive(p) for p in workers)
    os.kill(proc.pid, sig)
    try:
        assert gone_within(workers, 10), f"workers {[p for p in workers if alive(p)]} outlived the parent"
        proc.wait(timeout=30)
    finally:
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        assert "terminated (SIGTERM): finished runs are stored" in proc.stderr.read()


def test_a_worker_killed_from_outside_is_one_error_line(tmp_path):
    proc, pids = start(tmp_path, methods="test-sleep[die=true]", seeds="0")
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: a worker process died")
    assert "Traceback" not in err
    # the method called os._exit(9): it was not killed from outside, and the message says which
    assert ("a worker process died: it exited by itself with status 9 (a method's code called os._exit, or "
            "Python crashed), it was not killed from outside; finished runs are stored") in err


def test_a_worker_killed_by_sigkill_is_said_to_be_killed_from_outside(tmp_path):
    proc, pids = start(tmp_path, seeds="0-1")
    try:
        workers = wait_for_workers(pids, 1)
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1] == (
        "error: a worker process died: it was killed by SIGKILL from outside (e.g. by the out-of-memory "
        "killer or kill -9); finished runs are stored, run the same command again to resume")


def test_a_second_run_on_the_same_results_directory_is_refused_naming_the_holder(tmp_path, capsys):
    """Two `run` processes on one results directory used to compute every run twice. The second is
    refused while the first holds the directory, and can run once the first is gone (even SIGKILLed)."""
    from bench.cli import main
    from bench.execution.store import Store

    proc, pids = start(tmp_path, seeds="0", workers="1")  # one worker: fit sleeps in the process itself
    try:
        wait_for_workers(pids, 1)
        argv = ["run", "--config", str(REPO_ROOT / "configs" / "classical.toml"), "--methods",
                "iforest[n_estimators=10]", "--datasets", "letter", "--seeds", "0", "--workers", "1",
                "--out", str(tmp_path / "out"), "--no-report"]
        assert main(argv) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith(f"error: results directory {tmp_path / 'out'} is in use by run process "
                               f"{proc.pid} on ")
        assert "driver.py run" in line and "choose another --out" in line
        assert len(Store(tmp_path / "out").frame()) == 0  # the refused run computed nothing
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert main(argv) == 0  # the lock died with its holder
    assert len(Store(tmp_path / "out").frame()) == 1
