"""Stack-size invariance: the arithmetic that makes a member of a stack bit-identical to its solo fit.

Every deep method here trains several runs (seeds) as one stack of S members (engine/stacked.py,
engine/backbone.py): tensors of shape (S, ...), member s in slice s. A member must end up exactly as
it would alone, whatever S and whoever trains beside it, because the run key (bench/execution/runner.py) does not
name the group. Every training path (adVAE's hand-written gradients, adVAE's autograd path and the
deep baselines) takes the operations below from this one module.

What breaks it on a CPU (torch 2.13, measured on an Intel Xeon with AVX-512 and with the AVX2 kernels
forced, ``ATEN_CPU_CAPABILITY=avx2``): an elementwise kernel runs its vectorised body over the first
elements of a contiguous tensor and a scalar loop over the last (numel mod 32, or mod 16 with AVX2).
Which of member s's elements fall in that tail depends on S. Where the two paths round differently a
member's values depend on its place in the stack. Measured, over member slices of 1 to 5632 elements
and stacks of 2 to 8 (scratch probe, see README "Reproducibility"):
  - differ: ``torch.sigmoid``, ``F.softplus`` (Sleef vs libm); ``baddbmm`` whose output is 1 wide
    (a matrix-vector product);
  - identical: exp, log, log1p, tanh, sqrt, reciprocal, rsqrt, +, -, *, /, pow 2, relu, abs, where,
    clamp, lerp_, addcmul_, addcdiv_, threshold_backward, tanh_backward, sigmoid_backward (given the
    same inputs), softmax over the last dim, and ``bmm``/``baddbmm`` with o > 1 for b in 1..1000 and
    every layer shape of the five datasets.
Hence the workarounds: sigmoid and softplus written with size-invariant kernels, 1-wide products as
broadcast sums, and Adam on one flat buffer padded to a multiple of 64 elements (below) so that no
parameter ever sits in a tail, whatever a CPU's kernels do there. Other CPUs (another vendor's BLAS code path, other
vector widths) may round other kernels differently: ``tests/test_invariance.py`` checks every deep
method at the five datasets' shapes, stacks of 1 to 8, and is the test to run on a new machine.
MKL (torch's BLAS on x86): in its default mode it chooses a batched product's kernel per batch,
CPU and alignment, and on an AMD EPYC with AVX2 the weight-gradient product x^T g of a stack rounded
differently for members 1.. than alone (about 10 % of layer shapes, every AE/VAE/GAN/adVAE on cardio
and pendigits in tests/test_invariance.py). ``bench`` sets MKL_CBWR=AVX2 (Conditional Numerical
Reproducibility: one fixed code path) and ATEN_CPU_CAPABILITY=avx2 before torch's first kernel runs,
which makes those products batch-invariant; both are stored with every run.
Threads: the runner gives each run one torch thread; with several, a kernel splits its range into
per-thread chunks with their own tails, and invariance is not claimed.
"""
from __future__ import annotations

import bench  # noqa: F401  (pins MKL_CBWR / ATEN_CPU_CAPABILITY before torch's first kernel; see there)
import torch

#: The flat optimizer buffers are padded to a multiple of this many elements, so that the vectorised
#: loops (32 floats per step with AVX-512, 16 with AVX2) never leave an element in a scalar tail: every
#: parameter is updated by the vector code, alone and in any stack (SIMD lanes compute alike).
PAD_TO = 64


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(x) = (1 + tanh(x / 2)) / 2 (torch.sigmoid rounds its scalar tail differently)."""
    return 0.5 * torch.tanh(0.5 * x) + 0.5


def sigmoid_(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + exp(-x)), in place (the hand-written adVAE steps; exp's two paths agree)."""
    return x.neg_().exp_().add_(1.0).reciprocal_()


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|); max(x, 0) is written (x + |x|) / 2 so that the
    gradient at 0 is the true 1/2."""
    return 0.5 * (x + x.abs()) + torch.log1p(torch.exp(-x.abs()))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """S affine maps: x (S, B, i), weight (S, i, o), bias (S, 1, o) -> (S, B, o). A 1-wide output is a
    broadcast product and sum (baddbmm's matrix-vector kernel rounds with the stack size)."""
    n_in, n_out = weight.shape[1], weight.shape[2]
    if n_out == 1:
        return (x * weight.transpose(1, 2)).sum(dim=-1, keepdim=True) + bias
    if n_in == 1:
        return x * weight + bias
    return torch.baddbmm(bias, x, weight)


class StackAdam:
    """Adam (Kingma & Ba) over a stack's parameters, on ONE flat buffer.

    The arithmetic of ``torch.optim.Adam`` (lerp_, mul_ + addcmul_, sqrt / sqrt(bc2) + eps, addcdiv_),
    in its order, applied to a buffer that holds every parameter one after the other, zero-padded to a
    multiple of PAD_TO elements: no element ever sits in a kernel's scalar tail (which is where a
    member's update could depend on the stack size), and a step is a handful of operations instead of
    a handful per tensor (torch.optim's bookkeeping costs more than the update for these networks).

    The parameters are re-pointed to views of ``flat`` (build the optimizer after moving the networks
    to their device); ``grads`` are the matching views of ``grad_flat``. Hand-written gradients are
    written into ``grads``; for autograd, ``attach()`` makes them the parameters' ``.grad`` (autograd
    then adds into them in place) and ``zero_grad()`` clears them before each backward pass.
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        if not self.params:
            raise ValueError("StackAdam: no parameters")
        sizes = [p.numel() for p in self.params]
        total = -(-sum(sizes) // PAD_TO) * PAD_TO
        p0 = self.params[0]
        with torch.no_grad():
            self.flat = torch.zeros(total, dtype=p0.dtype, device=p0.device)
            self.grad_flat = torch.zeros_like(self.flat)
            self.grads, offset = [], 0
            for p, n in zip(self.params, sizes):
                self.flat[offset:offset + n].copy_(p.detach().reshape(-1))
                p.data = self.flat[offset:offset + n].view_as(p)
                self.grads.append(self.grad_flat[offset:offset + n].view_as(p))
                offset += n
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.t = 0

    def attach(self) -> None:
        """Make ``grads`` the parameters' ``.grad`` (for training through autograd)."""
        for p, g in zip(self.params, self.grads):
            p.grad = g

    def zero_grad(self) -> None:
        self.grad_flat.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update from the gradients currently in ``grads``."""
        beta1, beta2 = self.betas
        g = self.grad_flat
        self.t += 1
        self.exp_avg.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
        self.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
        bias_correction1 = 1 - beta1 ** self.t
        bias_correction2 = 1 - beta2 ** self.t
        denom = self.exp_avg_sq.sqrt().div_(bias_correction2 ** 0.5).add_(self.eps)
        self.flat.addcdiv_(self.exp_avg, denom, value=(self.lr / bias_correction1) * -1)


def one_wide(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the product a (S, m, i) @ b (S, i, o) has a 1-wide output or contraction."""
    return b.shape[2] == 1 or a.shape[2] == 1


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """S products a (S, m, i) @ b (S, i, o) -> (S, m, o); 1-wide ones as broadcast products."""
    if b.shape[2] == 1:
        return (a * b.transpose(1, 2)).sum(dim=-1, keepdim=True)
    if a.shape[2] == 1:
        return a * b
    return torch.bmm(a, b)
