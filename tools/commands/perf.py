"""The ``perf`` command: training speed of every deep method, solo and as a seed stack, against the
machine's float32 limit. Registered through ``bench.contract.registry.register_command`` (the plumbing never
imports it).

Per (dataset, method, gradient path, stack size S): ms per training iteration (wall clock and this
process's CPU time; the CPU time is the number to trust on a shared machine), the matrix-product
FLOPs of one iteration, counted with ``torch.utils.flop_counter``'s formulas on the method's own
iterations (forward and backward, every pass: WGAN-GP's n_critic critic steps and the gradient
penalty's double backward, adVAE's two steps), the achieved GFLOP/s (FLOPs / CPU time) and that as a
share of the machine's peak, measured as a large float32 matrix product on one thread (per CPU
second, like the achieved rate). The FLOPs of
a dense layer i -> o on b rows are 2 b i o forward and 2 b i o for each gradient (weights, input):
``dense_flops`` is that formula, and ``tests/test_perf_tools.py`` checks the counter against it.
Elementwise work (activations, losses, Adam) is not counted: on these small networks it is
per-operation overhead that fills the gap to the peak.

One iteration = the method's own unit (``n_iter``): one Adam step for AE, VAE and DAGMM, one
adVAE step pair, one generator update of GAN and WGAN-GP (WGAN-GP's with its n_critic critic steps),
one discriminator + generator step of MO-GAAL (no stacks: S = 1 only).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from bench import BenchError
from bench.execution import config
from bench.evaluation import data
from bench.evaluation.data import REPO_ROOT
from bench.evaluation.protocols import make_split
from bench.contract.registry import build, entry, register_command
from engine import compiled as engine_compiled

PAPER_CONFIG = REPO_ROOT / "configs" / "paper.toml"
#: Every deep method perf knows how to time (mo-gaal: solo only, it has no seed stacks).
DEEP_METHODS = ("advae", "e-advae", "g-advae", "ae", "vae", "gan", "wgan-gp", "dagmm", "mo-gaal")
ADVAE_FAMILY = ("advae", "e-advae", "g-advae")
WARMUP_ITERATIONS = 10
COLUMNS = ["dataset", "method", "gradients", "compiled", "d", "group_size", "n_iter", "ms_per_iteration",
           "cpu_ms_per_iteration", "cpu_ms_per_member", "gflop_per_iteration", "gflops",
           "pct_of_peak", "setup_s", "score_test_s"]


def dense_flops(layers: list[tuple[int, int]], rows: int, input_grad_first: bool = False) -> int:
    """FLOPs of one forward and backward pass through dense layers [(in, out), ...] on ``rows`` rows:
    2 rows i o forward, 2 rows i o for the weight gradient, 2 rows i o for the input gradient (not for
    the first layer unless ``input_grad_first``: its input is data)."""
    total = 0
    for j, (n_in, n_out) in enumerate(layers):
        per = 2 * rows * n_in * n_out
        total += per * (3 if (j > 0 or input_grad_first) else 2)
    return total


class _MatmulFlops(TorchDispatchMode):
    """Adds up the FLOPs of every matrix product torch runs, with torch's own per-operator formulas
    (``torch.utils.flop_counter``'s registry). ``FlopCounterMode`` itself also tracks modules, whose
    hooks break ``torch.autograd.grad`` on a leaf tensor (WGAN-GP's gradient penalty)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn) -> int:
    """Matrix-product FLOPs torch executes in ``fn()`` (forward and backward)."""
    with _MatmulFlops() as counter:
        fn()
    return counter.total


def machine_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    """float32 GFLOP/s of an n x n matrix product on the current thread count, per second of this
    process's CPU time (best of ``repeats``), so that a loaded machine does not lower it."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        a @ b
        best = min(best, max(time.process_time() - t0, 1e-9))
    return 2 * n ** 3 / best / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(peak: float) -> str:
    load = " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} thread(s), "
            f"float32 matmul peak {peak:.1f} GFLOP/s, load average {load} (1/5/15 min)")


def _detectors(method: str, params: dict, S: int, n_iter: int, gradients: str, compiled: bool = False):
    extra = {"gradients": gradients} if method in ADVAE_FAMILY else {}
    if compiled:
        extra["compile"] = True
    if method == "mo-gaal":  # its budget is epochs; n_iter iterations are n_iter // batches epochs
        return [build(method, {**params, **extra, "random_state": s, "device": "cpu"})[0] for s in range(S)]
    return [build(method, {**params, **extra, "n_iter": n_iter, "random_state": s, "device": "cpu"})[0]
            for s in range(S)]


def _fit(cls, dets, X, S):
    if hasattr(cls, "fit_group"):
        out = cls.fit_group(dets, [X] * S)
        bad = [r for r in out if isinstance(r, Exception)]
        if bad:
            raise bad[0]
        return out
    return [det.fit(X) for det in dets]


def time_method(method: str, X_train, X_test, params: dict, S: int, n_iter: int,
                gradients: str = "hand", compiled: bool = False) -> dict:
    """Time one fit of a stack of S seeds (n_iter iterations) and the scoring of X_test by member 0;
    count the FLOPs of one iteration. Returns one row (see COLUMNS, without dataset). ``compiled``:
    the compiled training step, timed over its calls after the first (which traces the graph and
    loads it from inductor's cache, filled by a warm-up fit of the same shapes: ``setup_s``)."""
    cls = entry(method).cls
    if method == "mo-gaal":
        n = len(X_train)
        B = min(int(params.get("batch_size", 500)), n)
        per_epoch = max(n // B, 1)
        epochs = max(1, -(-n_iter // per_epoch))
        params = {**params, "epochs": epochs, "stop_epochs": epochs}
        n_iter = epochs * per_epoch
    warm_S = S if compiled else 1
    _fit(cls, _detectors(method, {**params, "n_iter": WARMUP_ITERATIONS} if method != "mo-gaal"
                         else {**params, "epochs": 1, "stop_epochs": 1}, warm_S, WARMUP_ITERATIONS,
                         gradients, compiled), X_train, warm_S)

    dets = _detectors(method, params, S, n_iter, gradients, compiled)
    w0, c0 = time.perf_counter(), time.process_time()
    fitted = _fit(cls, dets, X_train, S)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    setup = np.nan
    if compiled:  # the compiled calls after the first, scaled to n_iter (the logged iterations are eager)
        step = engine_compiled.last_step() if engine_compiled.last_step else None
        if step is None or step.calls < 2:
            raise BenchError(f"perf: {method} ran no compiled step; use --n-iter of at least 2")
        setup = step.setup
        wall, cpu = step.wall / (step.calls - 1) * n_iter, step.cpu / (step.calls - 1) * n_iter
    t0 = time.perf_counter()
    fitted[0].anomaly_score(X_test)
    score_s = time.perf_counter() - t0
    # FLOPs of one iteration: a fit of 2 iterations minus a fit of 1 (set-up and the final mixture
    # of DAGMM cancel out). MO-GAAL: one epoch's difference divided by its batches. Eager: the
    # compiled step does the same arithmetic.
    if method == "mo-gaal":
        def one(e):
            return lambda: _fit(cls, [build(method, {**params, "epochs": e, "stop_epochs": e, "random_state": 0,
                                                     "device": "cpu"})[0]], X_train, 1)
        flops = (count_flops(one(2)) - count_flops(one(1))) / per_epoch
    else:
        def one(k):
            return lambda: _fit(cls, _detectors(method, params, S, k, gradients), X_train, S)
        flops = count_flops(one(2)) - count_flops(one(1))
    label = gradients if method in ADVAE_FAMILY else getattr(cls, "gradient_path", "autograd")
    return {"method": method, "gradients": label, "compiled": bool(compiled),
            "d": X_train.shape[1], "group_size": S, "n_iter": n_iter,
            "ms_per_iteration": 1e3 * wall / n_iter, "cpu_ms_per_iteration": 1e3 * cpu / n_iter,
            "cpu_ms_per_member": 1e3 * cpu / n_iter / S, "gflop_per_iteration": flops / 1e9,
            "gflops": flops / (cpu / n_iter) / 1e9 if cpu > 0 else np.nan, "setup_s": setup,
            "score_test_s": score_s}


def run_perf(datasets=None, methods=DEEP_METHODS, n_iter: int = 200, L: int = 1000, group_sizes=(1, 5),
             gradients=("hand",), data_dir=None, peak: float | None = None,
             paths=("eager",)) -> pd.DataFrame:
    """Time every (dataset, method, gradient path, stack size) on one thread; print the machine line
    and the table, return the table (COLUMNS). Paper configuration and paper split per dataset."""
    if int(n_iter) < 1:
        raise BenchError(f"--n-iter must be >= 1 (iterations to time), got {n_iter}")
    if int(L) < 1:
        raise BenchError(f"--L must be >= 1 (latent samples per scored row), got {L}")
    bad = [g for g in gradients if g not in ("hand", "autograd")]
    if bad or not gradients:
        raise BenchError(f"--gradients takes hand and/or autograd, got {','.join(gradients) or 'nothing'}")
    if not paths or any(p not in ("eager", "compiled") for p in paths):
        raise BenchError(f"--paths takes eager and/or compiled, got {','.join(paths) or 'nothing'}")
    unknown = [m for m in methods if m not in DEEP_METHODS]
    if unknown or not methods:
        raise BenchError(f"--methods takes deep methods among {', '.join(DEEP_METHODS)}; got "
                         f"{', '.join(unknown) or 'nothing'}")
    exp = config.load(PAPER_CONFIG)
    names = list(datasets or data.default_datasets())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as the runner gives each run
    rows = []
    try:
        peak = machine_peak_gflops() if peak is None else float(peak)
        print(machine_line(peak), flush=True)
        for name in names:
            split = make_split(data.load(name, data_dir), "paper")
            for method in methods:
                params = dict(exp.params_for(method, name))
                if "L" in entry(method).cls().get_params():
                    params["L"] = int(L)
                has_compile = "compile" in entry(method).cls().get_params()  # engine/compiled.py
                for grad in (gradients if method in ADVAE_FAMILY else ("autograd",)):
                    for path in paths:
                        if path == "compiled" and not (has_compile and (method not in ADVAE_FAMILY
                                                                        or grad == "hand")):
                            continue  # a compiled step exists for the hand-written gradients only
                        for S in (group_sizes if method != "mo-gaal" else (1,)):
                            row = {"dataset": name, **time_method(method, split.X_train, split.X_test,
                                                                  params, S, int(n_iter), grad,
                                                                  path == "compiled")}
                            row["pct_of_peak"] = 100 * row["gflops"] / peak
                            rows.append(row)
    finally:
        torch.set_num_threads(threads)
    df = pd.DataFrame(rows, columns=COLUMNS)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    return df


def _perf_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", type=lambda t: [x.strip() for x in t.split(",") if x.strip()],
                   help="comma-separated dataset names (default: all)")
    p.add_argument("--methods", default=",".join(DEEP_METHODS),
                   help="comma-separated deep methods (default: %(default)s)")
    p.add_argument("--n-iter", type=int, default=200, help="iterations to time (default: %(default)s)")
    p.add_argument("--L", type=int, default=1000,
                   help="latent samples per scored row, adVAE family and VAE (default: %(default)s)")
    p.add_argument("--group-sizes", default="1,5",
                   help="stack sizes S to time, comma-separated (default: %(default)s)")
    p.add_argument("--gradients", default="hand",
                   help="adVAE family's gradient paths: hand, autograd or hand,autograd (default: %(default)s)")
    p.add_argument("--paths", default="eager",
                   help="training paths: eager, compiled or eager,compiled (compiled: the methods with a "
                        "`compile` parameter, adVAE's family and WGAN-GP; default: %(default)s)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--data-dir", help="directory holding the .mat files")


def _perf(a: argparse.Namespace) -> int:
    try:
        sizes = tuple(int(s) for s in a.group_sizes.split(","))
    except ValueError:
        raise BenchError(f"--group-sizes must look like 1,5, got {a.group_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise BenchError(f"--group-sizes must be >= 1, got {a.group_sizes!r}")
    df = run_perf(datasets=a.datasets, methods=[m.strip() for m in a.methods.split(",") if m.strip()],
                  n_iter=a.n_iter, L=a.L, group_sizes=sizes,
                  gradients=tuple(g.strip() for g in a.gradients.split(",") if g.strip()),
                  data_dir=a.data_dir, paths=tuple(p.strip() for p in a.paths.split(",") if p.strip()))
    if a.csv:
        df.to_csv(a.csv, index=False)
        print(f"wrote {a.csv}")
    return 0


register_command("perf", "time every deep method's training iterations (solo and seed stacks) against "
                         "the machine's float32 peak", _perf_arguments, _perf)
