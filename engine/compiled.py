"""Compiled training steps: one iteration's forward passes, hand-written gradients and Adam updates
as one ``torch.compile`` graph (inductor; its C++ backend on a CPU).

What it buys (docs/performance.md): an adVAE iteration is about 250 tensor operations. Eager, each
is a kernel launch with its own dispatch, temporaries and pass over memory; compiled, the
elementwise chains between the batched products fuse into a few loops and the products stay MKL's
(inductor calls the same ``bmm``/``baddbmm`` as an extern kernel). Measured: 1.3x (adVAE, 5-seed
stack) to 2.4x (WGAN-GP, solo) less CPU per iteration; the products, which run near the machine's
matmul peak already, are what is left. Where gradients come from autograd (AE, VAE, GAN, DAGMM),
compiling the loss with AOTAutograd saved nothing per iteration and cost set-up and compile time, so
those methods have no compiled step.

Exactness: the graph is specialised to the stack's shapes (``dynamic=False``), and the fused loops
compute each element alone (no reduction spans two members), so a member of a compiled stack is
bit for bit its compiled solo fit (tests/test_compiled.py; 18 of 20 checks at the five datasets'
shapes). The exception: the solo adVAE graph at optdigits' shapes computed wrong gradients from its
second call (a miscompilation, cause not found), so ``CompiledStep`` checks its first
``VERIFY_CALLS`` calls against the eager step and raises on a disagreement. Compiled code rounds
differently from eager code (a few ulp per step), so ``compile`` is a parameter of the method and
part of a run's key; no shipped config sets it.

A method opts in with a ``compile`` parameter and a body
``body(params, grads, update, *inputs) -> outputs``: ``params[i]`` and ``grads[i]`` are the
parameters and gradient slots of optimizer i (views of its flat buffers, made inside the graph), and
``update(i)`` applies optimizer i's next Adam step there. ``CompiledStep(optimizers, body, updates)``
(``updates[i]``: how many steps optimizer i takes per call, e.g. a critic's n_critic) is then called
like the eager step. Graphs are cached on disk by inductor (``$TORCHINDUCTOR_CACHE_DIR``, by default
``/tmp/torchinductor_$USER``): the first group of a shape compiles (10-60 s of CPU), later ones in
any process load it (about 1 s).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import weakref

import torch

from engine.invariant import StackAdam

#: The constraint of a method's ``compile`` parameter.
COMPILE_CONSTRAINT = [bool]

_configured = False
#: The last CompiledStep made in this process (a weak reference), for ``perf``'s steady-state timing.
last_step = None


def compiler_missing() -> str | None:
    """Why compiled steps cannot run here (no C++ compiler for inductor's CPU backend), or None."""
    cxx = os.environ.get("CXX")
    if any(shutil.which(c) for c in ([cxx] if cxx else []) + ["g++", "c++", "clang++"]):
        return None
    return "compile=true needs a C++ compiler (g++ or clang++) for torch.compile's CPU backend; " \
           "install one or set compile = false"


def check_compile(det) -> None:
    """For a method's ``_check_combinations``: ``compile=True`` needs a C++ compiler here."""
    reason = compiler_missing() if getattr(det, "compile", False) else None
    if reason:
        raise det._invalid(reason)


def _configure() -> None:
    """Once per process: compile in this process (its CPU time is the run's), never fall back to eager
    silently when a cache limit is hit (that would change a run's scores with what ran before it)."""
    global _configured
    if _configured:
        return
    import torch._dynamo
    import torch._inductor.config as inductor

    inductor.compile_threads = 1
    torch._dynamo.config.cache_size_limit = 64
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 64
    if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
        torch._dynamo.config.fail_on_recompile_limit_hit = True
    _configured = True


def _cut(buf: torch.Tensor, layout) -> list[torch.Tensor]:
    return [buf[o:o + n].view(shape) for o, n, shape in layout]


def adam_update(opt: StackAdam, flat, grad, exp_avg, exp_avg_sq, step_size, bc2_sqrt) -> None:
    """``StackAdam.step``'s arithmetic on its buffers, the step-dependent numbers as 0-d tensors
    (``step_size`` = -lr / (1 - beta1^t), ``bc2_sqrt`` = sqrt(1 - beta2^t)) so that one graph serves
    every step."""
    beta1, beta2 = opt.betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denom = exp_avg_sq.sqrt().div_(bc2_sqrt).add_(opt.eps)
    flat.add_(step_size * (exp_avg / denom))


class CompiledStep:
    """``body`` and the Adam updates of ``optimizers`` as one compiled graph (see the module docstring).
    Calling it advances each optimizer's step count as ``StackAdam.step`` does, so compiled and eager
    steps (the logged iterations) can alternate on the same buffers."""

    #: Calls checked against the eager step (``reference``): a graph that computes something else
    #: fails its run instead of storing wrong numbers (seen once: a solo adVAE fit at optdigits'
    #: shapes went wrong on its second compiled call; docs/performance.md).
    VERIFY_CALLS = 3
    #: Largest difference of the gradients to the eager step's allowed there, relative to the largest.
    VERIFY_RTOL = 1e-3

    def __init__(self, optimizers: list[StackAdam], body, updates: tuple[int, ...] | None = None,
                 reference=None):
        _configure()
        torch._dynamo.reset()  # the previous stack's graphs: their guards would be checked on every call
        self.opts = list(optimizers)
        self.body = body
        self.updates = tuple(updates or (1,) * len(self.opts))
        self.layouts = [[(p.storage_offset() - opt.flat.storage_offset(), p.numel(), tuple(p.shape))
                         for p in opt.params] for opt in self.opts]
        self.buffers = [(opt.flat, opt.grad_flat, opt.exp_avg, opt.exp_avg_sq) for opt in self.opts]
        self._graph = torch.compile(self._step, fullgraph=True, dynamic=False)
        #: calls, and the wall and CPU seconds of the calls after the first (which traces the graph
        #: and compiles it or loads it from the cache; its seconds are ``setup``)
        self.calls, self.wall, self.cpu, self.setup = 0, 0.0, 0.0, 0.0
        self.reference = reference  # the eager step, called with the same inputs
        global last_step
        last_step = weakref.ref(self)

    def _step(self, buffers, scalars, inputs):
        params = [_cut(b[0], lay) for b, lay in zip(buffers, self.layouts)]
        grads = [_cut(b[1], lay) for b, lay in zip(buffers, self.layouts)]

        done = [0] * len(self.opts)

        def update(i: int) -> None:
            if done[i] == self.updates[i]:
                raise RuntimeError(f"CompiledStep: optimizer {i} stepped more than {self.updates[i]} times")
            adam_update(self.opts[i], *buffers[i], scalars[i][0][done[i]], scalars[i][1][done[i]])
            done[i] += 1

        out = self.body(params, grads, update, *inputs)
        if done != list(self.updates):
            raise RuntimeError(f"CompiledStep: optimizers stepped {done} times, declared {self.updates}")
        return out

    @staticmethod
    def _scalars(opt: StackAdam, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next n steps' (step_size, sqrt of bias correction 2), each an (n,) tensor."""
        beta1, beta2 = opt.betas
        ts = range(opt.t + 1, opt.t + n + 1)
        opt.t += n
        dev, dt = opt.flat.device, opt.flat.dtype
        return (torch.tensor([-(opt.lr / (1 - beta1 ** t)) for t in ts], dtype=dt, device=dev),
                torch.tensor([(1 - beta2 ** t) ** 0.5 for t in ts], dtype=dt, device=dev))

    @contextlib.contextmanager
    def timed(self):
        """Count the enclosed work as one call (see ``calls``)."""
        w0, c0 = time.perf_counter(), time.process_time()
        yield
        if self.calls:
            self.wall += time.perf_counter() - w0
            self.cpu += time.process_time() - c0
        else:
            self.setup = time.perf_counter() - w0
        self.calls += 1

    def _state(self):
        return [b.clone() for bufs in self.buffers for b in bufs], [opt.t for opt in self.opts]

    def _restore(self, state) -> None:
        tensors, ts = state
        for dst, src in zip((b for bufs in self.buffers for b in bufs), tensors):
            dst.copy_(src)
        for opt, t in zip(self.opts, ts):
            opt.t = t

    def __call__(self, *inputs):
        check = self.reference is not None and self.calls < self.VERIFY_CALLS
        if check:  # the eager step from the same state, then back to that state
            before = self._state()
            with torch.no_grad():
                self.reference(*inputs)
            expected = [bufs[1].clone() for bufs in self.buffers]  # the eager gradients
            self._restore(before)
        scalars = [self._scalars(opt, n) for opt, n in zip(self.opts, self.updates)]
        with torch.no_grad(), self.timed():
            out = self._graph(self.buffers, scalars, inputs)
        if check:  # the gradients (what the body computes; the parameters' Adam steps can turn a
            # rounding difference in a near-zero gradient into a whole step, the gradients cannot)
            for i, bufs in enumerate(self.buffers):
                got, want = bufs[1], expected[i]
                scale = max(float(want.abs().max()), 1e-12)
                diff = float((got - want).abs().max())
                if not diff <= self.VERIFY_RTOL * scale:
                    raise RuntimeError(
                        f"the compiled training step disagrees with the eager one at call {self.calls} "
                        f"(gradients of optimizer {i}: max difference {diff:.3g}, {diff / scale:.2g} of the "
                        "largest): set compile = false (run --eager) for this run")
        return out
