"""The network code shared by adVAE and the deep baselines (AE, VAE, GAN, WGAN-GP, DAGMM).

Every network here is *stacked*: it holds S independent copies of its weights and maps inputs of
shape (S, B, in) to (S, B, out) with batched matrix products. A single run is S = 1. Several runs of
the same method and dataset (seeds, ablation settings) train together as one S > 1 stack, which on
a CPU costs about the same per-operation overhead as one run (small networks are overhead bound).
Member s is initialised from its own seed and never interacts with the other members, and the
arithmetic comes from engine/invariant.py, so a member trained in a stack ends up bit for bit as it
would alone.

Sizes follow adVAE (paper Section 4.3; the authors' released weights use the same layer names):
  encoder E   : d -> h, ReLU, h -> h, ReLU, heads fcmu (h -> k) and fclogvar (h -> k)
  generator G : k -> h, ReLU, h -> h, ReLU, fcxmu (h -> d), Sigmoid (inputs are MinMax-scaled)
with h = d // 2 and k about d / 3 (the authors' sizes for their five datasets, d <= 64).

Wide data (a rule for datasets the paper did not tune, chosen before any run and without labels):
h = min(d // 2, MAX_HIDDEN) and k = min(round(d / 3), MAX_LATENT), with 64 and 32 the widths of PyOD's
AutoEncoder and DeepSVDD ([64, 32]), the deep detectors ADBench ran at their defaults. Up to d = 97 the
rule is the authors' (every paper dataset, and 40 of ADBench's 43); beyond it the networks stop
growing with d squared (InternetAds, d = 1555: h 777 -> 64, k 518 -> 32).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# Stack-size invariant arithmetic lives in engine/invariant.py, the one module every training path
# takes it from; sigmoid and softplus stay importable from here.
from engine.invariant import linear, sigmoid, softplus  # noqa: F401
from bench.contract.params import RANDOM_STATE, Check, Interval

#: Memory budget for the (rows x L samples x features) tensors of L-sample scoring. 16 MiB rather than
#: more: the chunks' tensors then stay near the CPU's caches, and scoring runs 2-3x faster than with
#: 256 MiB (issue 11: 3.75 s -> 1.44 s of CPU for 2000 rows at optdigits' shape). Against 256 MiB
#: chunks, over the full default run: every test score identical; on cardio some training rows' scores
#: differ by 1-2 ulp (a short chunk's products take another kernel path), thresholds and metrics equal.
DEFAULT_SCORE_BUDGET_BYTES = 16 * 2**20


#: Caps of the default sizes for wide data (module docstring): PyOD's AutoEncoder/DeepSVDD widths.
MAX_HIDDEN = 64
MAX_LATENT = 32


@dataclass(frozen=True)
class Shape:
    """Layer sizes: d features, h hidden units (min(d // 2, MAX_HIDDEN) by default), k latent units."""

    d: int
    k: int
    h: int = 0

    def __post_init__(self):
        if self.h <= 0:
            object.__setattr__(self, "h", min(max(self.d // 2, 1), MAX_HIDDEN))


def _is_device(v) -> bool:
    return isinstance(v, str) and (v == "auto" or isinstance(torch.device(v), torch.device))


#: Constraints shared by the deep methods' common parameters (bench.contract.params).
POSITIVE_INT = [Interval(int, 1, None)]
TRAINING_CONSTRAINTS = {
    "n_iter": POSITIVE_INT, "batch_size": POSITIVE_INT, "lr": [Interval(float, 0, None, closed="neither")],
    "latent_dim": [Interval(int, 1, None), None], "log_every": POSITIVE_INT,
    "device": [Check(_is_device, "'auto' or a torch device such as 'cpu' or 'cuda:0'")],
    "random_state": RANDOM_STATE,
}


def pick_device(device: str = "auto") -> torch.device:
    """``"auto"`` = the GPU when one is present, the CPU otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: Salts of each member's torch generators: weight init uses 0, training noise (latent samples,
#: interpolation weights, dropout masks) NOISE_SALT, the L scoring samples SCORE_SALT. All derive
#: from the member's seed only, so a member's streams are the same alone or in a stack.
NOISE_SALT = 1
SCORE_SALT = 2


def latent_size(latent_dim: int | None, d: int) -> int:
    """adVAE's latent size k: the configured one, else about d / 3 (the authors' k is ~d/3), at most
    MAX_LATENT."""
    return min(max(1, round(d / 3)), MAX_LATENT) if latent_dim is None else int(latent_dim)


def member_generators(seeds: list[int], salt: int = 0) -> list[torch.Generator]:
    """One CPU torch generator per stack member, derived from the member's seed only."""
    return [torch.Generator().manual_seed(int(s) * 1_000_003 + salt) for s in seeds]


class StackedLinear(nn.Module):
    """S independent affine maps: (S, B, i) -> (S, B, o). Init as ``nn.Linear`` (U(-1/sqrt(i), 1/sqrt(i)))
    from each member's own generator."""

    def __init__(self, n_in: int, n_out: int, generators: list[torch.Generator]):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        w = [torch.rand(n_in, n_out, generator=g) * 2 * bound - bound for g in generators]
        b = [torch.rand(1, n_out, generator=g) * 2 * bound - bound for g in generators]
        self.weight = nn.Parameter(torch.stack(w))  # (S, i, o)
        self.bias = nn.Parameter(torch.stack(b))  # (S, 1, o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (S, B, i) -> (S, B, o)
        return linear(x, self.weight, self.bias)

    def load_member(self, s: int, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Copy an ``nn.Linear`` state (weight (o, i), bias (o,)) into member s."""
        with torch.no_grad():
            self.weight[s].copy_(weight.T)
            self.bias[s, 0].copy_(bias)


class Encoder(nn.Module):
    """E: x (S, B, d) -> (mu, logvar), each (S, B, k). ``deterministic`` AE encoders use only mu."""

    def __init__(self, shape: Shape, generators: list[torch.Generator]):
        super().__init__()
        self.fc1 = StackedLinear(shape.d, shape.h, generators)
        self.fc2 = StackedLinear(shape.h, shape.h, generators)
        self.fcmu = StackedLinear(shape.h, shape.k, generators)
        self.fclogvar = StackedLinear(shape.h, shape.k, generators)

    def forward(self, x):
        hid = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        return self.fcmu(hid), self.fclogvar(hid)


class Generator(nn.Module):
    """G: z (S, B, k) -> x (S, B, d); Sigmoid output unless ``sigmoid=False`` (WGAN-GP)."""

    def __init__(self, shape: Shape, generators: list[torch.Generator], sigmoid: bool = True):
        super().__init__()
        self.fc3 = StackedLinear(shape.k, shape.h, generators)
        self.fc4 = StackedLinear(shape.h, shape.h, generators)
        self.fcxmu = StackedLinear(shape.h, shape.d, generators)
        self.sigmoid = sigmoid

    def forward(self, z):
        out = self.fcxmu(torch.relu(self.fc4(torch.relu(self.fc3(z)))))
        return sigmoid(out) if self.sigmoid else out


class Discriminator(nn.Module):
    """d -> h -> h -> 1 (ReLU between); Sigmoid output for a GAN, none for a WGAN critic."""

    def __init__(self, shape: Shape, generators: list[torch.Generator], sigmoid: bool = True):
        super().__init__()
        self.fc1 = StackedLinear(shape.d, shape.h, generators)
        self.fc2 = StackedLinear(shape.h, shape.h, generators)
        self.out = StackedLinear(shape.h, 1, generators)
        self.sigmoid = sigmoid

    def forward(self, x):  # (S, B, d) -> (S, B)
        logit = self.out(torch.relu(self.fc2(torch.relu(self.fc1(x))))).squeeze(-1)
        return sigmoid(logit) if self.sigmoid else logit


def member_copy(module: nn.Module, s: int) -> nn.Module:
    """Member s of a stacked module as an S = 1 module, frozen, for scoring."""
    out = copy.deepcopy(module)
    for layer in out.modules():
        if isinstance(layer, StackedLinear):
            layer.weight = nn.Parameter(layer.weight.detach()[s:s + 1].clone(), requires_grad=False)
            layer.bias = nn.Parameter(layer.bias.detach()[s:s + 1].clone(), requires_grad=False)
    return out.eval()


def load_linear_state(module: nn.Module, state: dict, s: int = 0) -> None:
    """Load a state_dict of plain ``nn.Linear`` layers (keys ``fc1.weight`` ...) into member s of a
    stacked module with the same layer names (e.g. the adVAE authors' released weights)."""
    layers = {name: m for name, m in module.named_modules() if isinstance(m, StackedLinear)}
    expected = {f"{n}.{p}" for n in layers for p in ("weight", "bias")}
    if set(state) != expected:
        raise ValueError(f"state_dict keys {sorted(state)} do not match {sorted(expected)}")
    for name, layer in layers.items():
        w, b = state[f"{name}.weight"], state[f"{name}.bias"]
        if tuple(w.shape) != (layer.weight.shape[2], layer.weight.shape[1]):
            raise ValueError(f"{name}.weight has shape {tuple(w.shape)}, expected "
                             f"{(layer.weight.shape[2], layer.weight.shape[1])}")
        layer.load_member(s, w, b)


def batch_indices(n_rows: int, batch_size: int, n_iterations: int, seed: int):
    """Mini-batch row indices for one member: reshuffled epochs from the member's own seed.
    Yields ``n_iterations`` int64 arrays (the last batch of an epoch may be shorter)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_iterations:
        perm = rng.permutation(n_rows)
        for start in range(0, n_rows, batch_size):
            if done == n_iterations:
                return
            yield perm[start:start + batch_size]
            done += 1


@torch.no_grad()
def mean_reconstruction_error(encoder: Encoder, generator: Generator, X: torch.Tensor,
                              eps: torch.Tensor,
                              budget_bytes: int = DEFAULT_SCORE_BUDGET_BYTES) -> torch.Tensor:
    """adVAE/VAE anomaly score (paper Section 3.4): for each row, the squared error of the MEAN of L
    reconstructions G(mu + sigma * eps_l), summed over features.

    X: (S, n, d) or (n, d) broadcast to every member. eps: (S, L, k) standard-normal draws, shared by
    every row of a member (common random numbers), so a row's score is a function of the row and the
    seed alone, independent of which other rows are scored with it and of the chunk size.
    Rows are processed in chunks so that the (S, rows, L, max(d, h)) tensors fit ``budget_bytes``.
    Returns (S, n).
    """
    S, L, k = eps.shape
    if X.dim() == 2:
        X = X.unsqueeze(0).expand(S, -1, -1)
    n, d = X.shape[1], X.shape[2]
    width = max(d, encoder.fc1.weight.shape[2], k)
    per_row = S * L * width * X.element_size() * 3  # a few live (S, rows*L, width) tensors
    chunk = max(1, int(budget_bytes // per_row))
    out = []
    for start in range(0, n, chunk):
        x = X[:, start:start + chunk]  # (S, c, d)
        mu, logvar = encoder(x)  # (S, c, k)
        std = torch.exp(0.5 * logvar)
        z = mu.unsqueeze(2) + std.unsqueeze(2) * eps.unsqueeze(1)  # (S, c, L, k)
        c = x.shape[1]
        x_bar = generator(z.reshape(S, c * L, k)).reshape(S, c, L, d).mean(dim=2)  # (S, c, d)
        out.append(((x - x_bar) ** 2).sum(dim=-1))  # (S, c)
    return torch.cat(out, dim=1)
