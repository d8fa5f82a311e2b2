"""Where groups of runs execute: in this process (serial), in local worker processes (pool), or on a
Dask cluster (``--executor dask``). The driver, ``runner.run_experiment``, is the same for all three:
it orders the groups, hands them to an executor as tasks, and alone writes the store as results
arrive. An executor only runs ``fn(task, *args)`` for each task, starting them in the order given,
and calls ``on_result(task, result)`` in the driver as each one finishes.

Tasks carry what they need (the group's runs, the dataset's arrays, the method's class), so a Dask
worker needs the suite installed but no shared file system. Every task runs with one BLAS thread and
one torch thread whatever the executor (``runner.run_task``), so scores do not depend on it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Sequence

from bench import BenchError, WorkError

EXECUTORS = ("local", "dask")
CONNECT_TIMEOUT = 5.0  # seconds to wait for a Dask scheduler that does not answer

OnResult = Callable[[Any, Any], None]


class Executor:
    """Base class. ``slots``: groups that can run at once (for the utilisation line)."""

    name = "executor"
    slots = 1
    remote = False  # tasks may run in another Python (another machine): ship classes by value
    on_this_machine = True  # every worker runs here (the utilisation line may add this machine's load)

    def cores(self) -> int:
        """Cores the groups can use at once: the slots, at most this machine's cores when local."""
        return min(self.slots, os.cpu_count() or 1) if self.on_this_machine else self.slots

    def start(self) -> "Executor":
        """Acquire what the executor needs (a cluster connection); BenchError if it cannot."""
        return self

    def run(self, fn: Callable, tasks: Sequence, args: tuple, on_result: OnResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


class SerialExecutor(Executor):
    """Every group in this process, one after another (``--workers 1``)."""

    name = "serial"

    def run(self, fn, tasks, args, on_result):
        for task in tasks:
            on_result(task, fn(task, *args))


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


def _how_it_ended(procs) -> str:
    """Why a pool broke, from its processes' exit codes: one that exited by itself (a method's
    ``os._exit``, a crash of Python) or was killed by a signal (from outside: the out-of-memory killer,
    ``kill``). The pool ends its other workers with SIGTERM, so those codes say nothing."""
    codes = [p.exitcode for p in procs if p.exitcode not in (None, 0, -signal.SIGTERM)]
    if not codes:
        return "it was killed from outside (e.g. by the out-of-memory killer or SIGTERM)"
    code = codes[0]
    if code > 0:
        return (f"it exited by itself with status {code} (a method's code called os._exit, or Python "
                "crashed), it was not killed from outside")
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGKILL:
        return f"it was killed by {name} from outside (e.g. by the out-of-memory killer or kill -9)"
    return f"it was ended by {name} (signal {-code}; a crash such as SIGSEGV is the method's or a library's)"


class PoolExecutor(Executor):
    """Worker processes on this machine (spawned, so each starts clean). Groups start in the order
    given (the pool's queue is first in, first out)."""

    name = "local"

    def __init__(self, workers: int):
        self.slots = max(1, int(workers))

    def describe(self) -> str:
        return f"local pool of {self.slots} worker processes"

    def run(self, fn, tasks, args, on_result):
        pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(),))
        futures = {pool.submit(fn, task, *args): task for task in tasks}
        try:
            for fut in as_completed(futures):
                on_result(futures[fut], fut.result())
        except BrokenProcessPool as exc:
            procs = list((getattr(pool, "_processes", None) or {}).values())
            _stop_workers(pool, futures)
            raise WorkError(f"a worker process died: {_how_it_ended(procs)}; finished runs are stored, run "
                            "the same command again to resume") from exc
        except BaseException:  # interrupt, SIGTERM, a failing store: the workers stop now
            _stop_workers(pool, futures)
            raise
        pool.shutdown(wait=True)


def local_executor(workers: int) -> Executor:
    return SerialExecutor() if workers <= 1 else PoolExecutor(workers)


@contextlib.contextmanager
def _quiet(*names: str, level=logging.CRITICAL):
    """Dask logs a failed connection as a multi-line ERROR with a traceback; the CLI says it in one."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lv in zip(loggers, before):
            lg.setLevel(lv)


@contextlib.contextmanager
def _sigint_ignored():
    """Processes started within inherit SIGINT ignored (and Python then installs no KeyboardInterrupt
    handler in them), like the pool's workers; the driver's own handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def _probe(address: str, timeout: float) -> None:
    """Connect to ``address`` and ask who it is: a Dask scheduler, or an exception saying why not."""
    from distributed.core import rpc

    async def ask():
        async with rpc(address, timeout=timeout) as r:
            return await r.identity()

    info = await asyncio.wait_for(ask(), timeout)
    if not isinstance(info, dict) or info.get("type") != "Scheduler":
        raise ValueError(f"the process there is not a Dask scheduler (it says {str(info)[:80]})")


def _dask():
    try:
        import distributed
    except ImportError:
        raise BenchError('--executor dask needs the optional package distributed: pip install -e ".[dask]" '
                         "(bootstrap.sh installs it)") from None
    return distributed


#: glibc malloc settings for the worker processes of a LocalCluster (see DaskExecutor.start); for a
#: cluster of your own, start its workers with these in the environment (docs/running.md).
MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": 256 * 2**20, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20}


class DaskExecutor(Executor):
    """One group is one Dask task. With ``address``: an existing cluster (``dask scheduler`` and
    ``dask worker ADDRESS``); without: a ``LocalCluster`` of ``workers`` single-threaded worker
    processes on this machine. A task lost with its worker is run again by Dask on another worker;
    the driver receives each task's result once and stores its runs once."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None,
                 timeout: float = CONNECT_TIMEOUT):
        self.address, self.workers, self.timeout = address, workers, timeout
        self.client = self.cluster = None
        self.remote = True
        self.on_this_machine = not address

    def describe(self) -> str:
        where = f"scheduler {self.address}" if self.address else "a LocalCluster"
        return f"dask ({where}, {self.slots} worker threads)"

    def start(self) -> "DaskExecutor":
        if self.client is not None:
            return self
        distributed = _dask()
        with _quiet("distributed", "tornado"):
            if self.address:
                try:  # ask first, so a failure leaves no half-made Client to complain when collected
                    asyncio.run(_probe(self.address, self.timeout))
                except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ValueError (bad address)
                    why = " ".join(str(exc).split()) or type(exc).__name__
                    raise BenchError(f"no Dask scheduler answers at {self.address} within "
                                     f"{self.timeout:g} s ({why[:200]}); start one with `dask scheduler` "
                                     "and give the address it prints (tcp://HOST:8786)") from None
                self.client = distributed.Client(self.address, timeout=max(self.timeout, 30),
                                                 set_as_default=False)
            else:
                n = max(1, int(self.workers or os.cpu_count() or 1))
                # Dask's statistical profiler samples every thread's stack every 10 ms: CPU and GIL
                # taken from the training loop (about 10% of a quick WGAN-GP group here). Set for the
                # driver's lifetime, so workers the nannies restart inherit it too.
                import dask

                dask.config.set({"distributed.worker.profile.enabled": False})
                # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes
                # glibc's mmap threshold at 128 KiB: every larger tensor became an mmap/munmap pair
                # with fresh zeroed pages (strace: ~400 pairs/s in a worker, none in a pool worker),
                # 43 s of system time on `run --quick` against the pool's 12 s. A 32 MiB mmap
                # threshold and a 256 MiB trim threshold bring the groups' CPU within 3 % of the
                # pool's (76 s against 74 s, measured back to back, docs/performance.md). Allocation
                # only: no result changes.
                dask.config.set({"distributed.nanny.pre-spawn-environ": MALLOC_ENV})
                with _sigint_ignored():  # Ctrl-C is the driver's to handle: it closes the cluster
                    self.cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1,
                                                            processes=True, dashboard_address=None,
                                                            silence_logs=logging.ERROR)
                self.client = distributed.Client(self.cluster, set_as_default=False)
        workers = self.client.scheduler_info().get("workers", {})
        self.slots = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))
        return self

    def run(self, fn, tasks, args, on_result):
        distributed = _dask()
        client = self.client
        futures = {}
        for i, task in enumerate(tasks):  # higher priority starts first: the order given
            fut = client.submit(fn, task, *args, key=f"advae-group-{task.index}-{os.getpid()}-{id(task):x}",
                                pure=False, priority=len(tasks) - i)
            futures[fut] = task
        try:
            for fut in distributed.as_completed(list(futures), loop=client.loop):
                try:
                    result = fut.result()
                except distributed.KilledWorker as exc:
                    raise WorkError(f"a Dask task was lost with its worker too often ({exc}); finished runs "
                                    "are stored, run the same command again to resume") from None
                except Exception as exc:  # noqa: BLE001 - run_task records a method's failure itself
                    raise WorkError(f"a Dask task failed: {type(exc).__name__}: {exc}; finished runs are "
                                    "stored, run the same command again to resume") from None
                on_result(futures[fut], result)
                fut.release()
        except BaseException:
            with _quiet("distributed", "tornado"), contextlib.suppress(Exception):
                client.cancel(list(futures), force=True)
            raise

    def close(self) -> None:
        with _quiet("distributed", "tornado", "asyncio"):
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.close(timeout=10)
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close(timeout=10)
        self.client = self.cluster = None


#: Memory a worker process needs (Python, torch and numpy imported, one group's arrays and networks):
#: about 0.35 GiB resident for the largest default group here, with headroom.
WORKER_MEMORY = 512 * 2**20


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory() -> int | None:
    """Bytes of memory available for new processes (MemAvailable), or None if the system won't say."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - no psutil, or it cannot tell
        return None


def max_workers() -> tuple[int, str]:
    """The most worker processes this machine holds: one per core (each group runs one thread, so more
    only share the cores), and no more than its available memory takes at WORKER_MEMORY each.
    Returns (count, why) for messages."""
    cores = usable_cores()
    mem = available_memory()
    by_mem = max(1, mem // WORKER_MEMORY) if mem is not None else cores
    why = f"{cores} core{'s' if cores != 1 else ''}"
    if mem is not None:
        why += f", {mem / 2**30:.1f} GiB of memory available at {WORKER_MEMORY / 2**30:g} GiB per worker"
    return min(cores, by_mem), why


def check_workers(workers: int | None, scheduler: str | None = None) -> int:
    """The worker count for this machine: ``workers`` if it holds them (BenchError beyond, before
    anything starts), else (None) as many as it holds. With ``scheduler`` the cluster's own workers run
    the groups and nothing is started here, so any count passes."""
    limit, why = max_workers()
    if workers is None:
        return limit
    if workers > limit and not scheduler:
        shown = str(workers) if workers < 10**12 else f"{str(workers)[:6]}... ({len(str(workers))} digits)"
        raise BenchError(f"--workers {shown}: this machine holds at most {limit} worker "
                         f"process{'es' if limit != 1 else ''} ({why}); give at most {limit}, or leave "
                         "--workers out for one per core")
    return workers


def make(kind: str, workers: int, scheduler: str | None = None) -> Executor:
    """The executor a ``run`` command asks for (not started)."""
    if kind not in EXECUTORS:
        raise BenchError(f"unknown executor {kind!r} (known: {', '.join(EXECUTORS)})")
    if scheduler and kind != "dask":
        raise BenchError("--scheduler needs --executor dask")
    if kind == "dask":
        return DaskExecutor(scheduler, workers)
    return local_executor(workers)


def pickle_by_value(cls: type) -> None:
    """A method defined in a --plugin file lives in a module a Dask worker cannot import: ship the
    class by value (cloudpickle) instead of by name."""
    mod = sys.modules.get(getattr(cls, "__module__", ""))
    if mod is None or mod.__name__ == "__main__":
        return  # cloudpickle ships __main__'s classes by value already
    if mod.__name__.split(".")[0] in ("bench", "methods"):
        return
    file = getattr(mod, "__file__", None)
    if mod.__name__.startswith("advae_bench_plugin_") or (file and "site-packages" not in file):
        import cloudpickle

        with contextlib.suppress(ValueError):
            cloudpickle.register_pickle_by_value(mod)
