"""What every deep method shares: training a group of seeds as one stack, the base class of the deep
detectors, the one batch-and-noise feeder, the one L-sample scorer.

A group of runs (seeds) of one method, dataset and parameters trains as one stack of S members
(engine/backbone.py): members with the same training shape share every tensor operation, each with
its own weight init (``member_generators(seeds)``), mini-batch order (``batch_indices(..., seed)``)
and noise (``member_generators(seeds, NOISE_SALT)``), through the stack-size invariant arithmetic of
engine/invariant.py. After training, member s is copied out as an S = 1 network, so its scores do not
depend on the group it trained in.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bench.contract.base import Detector
from bench.execution.telemetry import LossLog
from engine.backbone import (NOISE_SALT, SCORE_SALT, TRAINING_CONSTRAINTS, Encoder, Generator, Shape, batch_indices,
                              latent_size, mean_reconstruction_error, member_copy, member_generators,
                              pick_device)
from engine.invariant import StackAdam

#: Rows per chunk when scoring a deterministic network (bounds memory only; scores do not depend on it).
SCORE_CHUNK = 8192
#: Iterations whose mini-batches and noise the feeder prepares at once (fewer small operations).
FEED_BLOCK = 64


def store_params(obj, values: dict) -> None:
    """The body of a detector's ``__init__``: ``store_params(self, locals())`` stores every argument
    under its own name and does nothing else (scikit-learn's rule; ``get_params`` reads them back)."""
    for name, value in values.items():
        if name not in ("self", "__class__"):
            setattr(obj, name, value)


class StackedFit:
    """Mixin for methods that train a group of runs together as one stack of networks. The subclass
    defines ``_fit_stack(dets, Xs) -> list[fitted detector | Exception]`` for members whose training
    arrays have the same shape; ``fit`` is a group of one. Members are split by training shape (the
    ``resample`` protocol can give seeds different row counts) and by ``stack_signature()``, and a stack
    that raises fails each of its members with that exception, never the other stacks.

    Members differ in ``random_state`` and, where the method declares them, in ``member_params``: the
    parameters its training takes per member (weights and margins as (S, ...) tensors broadcast over
    the stack, switches that only zero a term). The runner groups runs by the other parameters
    (bench/execution/runner.py). ``stack_signature()`` says which members can share one stack exactly (e.g. the
    switches that change the shape of an operation); ``stack_member_params()`` may narrow the declared
    set for an instance (then members that differ in the others train in separate stacks).
    """

    #: Parameters that may differ between the members of one stack (besides random_state).
    member_params: tuple[str, ...] = ()

    def stack_member_params(self) -> tuple[str, ...]:
        return tuple(self.member_params)

    def stack_signature(self) -> tuple:
        """Members train in one stack only if their signatures are equal. Default: the values of the
        declared member parameters this instance does not take per member."""
        return tuple((name, repr(getattr(self, name))) for name in self.member_params
                     if name not in self.stack_member_params())

    def fit(self, X: np.ndarray):
        (result,) = type(self).fit_group([self], [X])
        if isinstance(result, Exception):
            raise result
        return self

    @classmethod
    def fit_group(cls, detectors, X_trains):
        for det in detectors:
            det.validate_params()
        free = {"random_state", *cls.member_params}

        def shared(det):
            return {k: v for k, v in det.get_params().items() if k not in free}

        ref = shared(detectors[0])
        for det in detectors[1:]:
            other = shared(det)
            if other != ref:
                raise ValueError(f"{cls.__name__}.fit_group: members differ in parameters other than "
                                 f"random_state and {sorted(free - {'random_state'})} ({ref} vs "
                                 f"{other}); fit them separately")
        Xs = [np.asarray(X, dtype=np.float32) for X in X_trains]
        results: list = [None] * len(detectors)
        by_stack: dict[tuple, list[int]] = {}
        for i, X in enumerate(Xs):
            by_stack.setdefault((X.shape, detectors[i].stack_signature()), []).append(i)
        for members in by_stack.values():
            try:
                fitted = cls._fit_stack([detectors[i] for i in members], [Xs[i] for i in members])
            except Exception as exc:  # noqa: BLE001 - every member of this stack failed with it
                fitted = [exc] * len(members)
            for i, res in zip(members, fitted):
                results[i] = res
        return results

    @classmethod
    def _fit_stack(cls, dets: list, Xs: list[np.ndarray]) -> list:  # pragma: no cover - interface
        raise NotImplementedError


class Feed:
    """Mini-batches and training noise of a stack, prepared FEED_BLOCK steps at a time.

    Member s reshuffles its rows every epoch from its own seed (``batch_indices``) and draws its noise
    from its own generator (``member_generators(seeds, NOISE_SALT)``): for every step and every noise
    channel ``name: (kind, width)`` (kind "normal" or "uniform" on [0, 1)), one (batch_size, width)
    block, channels drawn in the order given. So a member's stream is the same alone or in any stack.
    Iterating yields (x (S, b, d), {name: (S, batch_size, width)}); b is smaller than batch_size on the
    last batch of an epoch, and a step that needs one noise row per batch row takes the first b rows
    (``rows(noise, b)``).
    """

    def __init__(self, X: torch.Tensor, batch_size: int, n_steps: int, seeds: list[int],
                 noise: dict[str, tuple[str, int]] | None = None):
        S, n, d = X.shape
        self.X = X.reshape(S * n, d)
        self.S, self.d, self.B, self.n_steps = S, d, int(batch_size), int(n_steps)
        self.noise = dict(noise or {})
        for name, (kind, _) in self.noise.items():
            if kind not in ("normal", "uniform"):
                raise ValueError(f"Feed: noise {name!r} has kind {kind!r}; use 'normal' or 'uniform'")
        self.batches = [batch_indices(n, self.B, self.n_steps, s) for s in seeds]
        self.gens = member_generators(seeds, NOISE_SALT)
        self.offsets = (np.arange(S) * n)[:, None]  # row offset of member s in the flat X

    def _draw(self, m: int) -> dict[str, torch.Tensor]:  # {name: (m, S, B, width)}
        per_member = [{name: (torch.randn if kind == "normal" else torch.rand)(m, self.B, width,
                                                                                 generator=g)
                       for name, (kind, width) in self.noise.items()} for g in self.gens]
        return {name: torch.stack([pm[name] for pm in per_member], dim=1).to(self.X.device)
                for name in self.noise}

    def __iter__(self):
        S, d = self.S, self.d
        for start in range(0, self.n_steps, FEED_BLOCK):
            m = min(FEED_BLOCK, self.n_steps - start)
            idx = [np.stack([next(b) for b in self.batches]) + self.offsets for _ in range(m)]  # (S, b)
            sizes = [i.shape[1] for i in idx]
            flat = torch.from_numpy(np.concatenate([i.reshape(-1) for i in idx])).to(self.X.device)
            xs = torch.split(self.X.index_select(0, flat), [S * b for b in sizes])
            noise = self._draw(m)
            for j, b in enumerate(sizes):
                yield xs[j].view(S, b, d), {name: v[j] for name, v in noise.items()}


def rows(noise: torch.Tensor, b: int) -> torch.Tensor:
    """The first b rows of a (S, B, width) noise block (the short last batch of an epoch)."""
    return noise if noise.shape[1] == b else noise[:, :b]


def all_diverged(log: LossLog) -> bool:
    return all(d is not None for d in log.diverged)


def chunked(fn, X: torch.Tensor, chunk: int = SCORE_CHUNK) -> torch.Tensor:
    """Apply a row-wise ``fn`` ((c, d) -> (c,)) in row chunks; returns (n,)."""
    if len(X) == 0:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([fn(X[i:i + chunk]) for i in range(0, len(X), chunk)])


def l_sample_scores(encoder: Encoder, generator: Generator, X, L: int = 1000, seed: int = 0,
                    budget_mb: float = 16) -> np.ndarray:
    """The anomaly score of adVAE and VAE (adVAE paper Section 3.4) of each row of X (n, d) with S = 1
    networks: the squared error of the mean of L reconstructions G(mu + sigma eps_l), summed over
    features. The L standard-normal draws eps (L, k) come from ``seed`` alone (SCORE_SALT) and are
    shared by every row; rows are scored in chunks under ``budget_mb`` MiB. Returns (n,) float64."""
    if int(L) < 1:
        raise ValueError(f"L-sample scoring: L must be >= 1, got {L}")
    if not float(budget_mb) > 0:
        raise ValueError(f"L-sample scoring: score_budget_mb must be > 0, got {budget_mb}")
    w = encoder.fc1.weight  # (1, d, h)
    k = encoder.fcmu.weight.shape[2]
    X = torch.as_tensor(np.asarray(X, dtype=np.float32)).to(w.device)
    if X.ndim != 2 or X.shape[1] != w.shape[1]:
        raise ValueError(f"L-sample scoring: expected rows of {w.shape[1]} features, got shape "
                         f"{tuple(X.shape)}")
    gen = member_generators([int(seed)], SCORE_SALT)[0]
    eps = torch.randn(1, int(L), k, generator=gen).to(w.device)  # (1, L, k)
    s = mean_reconstruction_error(encoder.eval(), generator.eval(), X, eps,
                                  budget_bytes=max(1, int(float(budget_mb) * 2**20)))  # (1, n)
    return s[0].double().cpu().numpy()


class StackedDeepDetector(StackedFit, Detector):
    """Base of the deep detectors on the stacked backbone (AE, VAE, GAN, WGAN-GP, DAGMM, adVAE).

    A subclass defines ``__init__`` (with at least n_iter, batch_size, lr, latent_dim, log_every,
    device, random_state; body ``store_params(self, locals())``), ``_train`` (the training loop,
    recording every loss term in the LossLog) and ``_score`` (S = 1 networks -> (n,) float64 scores);
    optionally ``_build`` (the stacked networks; default adVAE's encoder E and generator G),
    ``parameter_constraints`` (bench.contract.params; relations in ``_check_combinations``) and ``_after_fit`` (e.g. DAGMM's mixture).
    After fitting, ``networks_`` holds the member's S = 1 copy of every network.
    """

    version = "2"  # 2: inputs scaled by sklearn's MinMaxScaler (ulp-level change)
    max_group_size = 8
    quick_params = {"n_iter": 300}
    #: The rule that sizes the networks for d features, shown by `list METHOD` (engine/backbone.py).
    sizing = ("hidden h = min(d // 2, 64), latent k = latent_dim or min(round(d / 3), 32): the authors' "
              "sizes up to d = 97, PyOD's AutoEncoder/DeepSVDD widths [64, 32] beyond")
    parameter_constraints = TRAINING_CONSTRAINTS  # a subclass adds its own: {**TRAINING_CONSTRAINTS, ...}

    # ---- subclass hooks ---------------------------------------------------------------------
    def _build(self, shape: Shape, gens: list[torch.Generator]) -> nn.ModuleDict:
        """adVAE's encoder E and generator G (the AE and VAE networks); GANs and DAGMM override."""
        return nn.ModuleDict({"E": Encoder(shape, gens), "G": Generator(shape, gens)})

    def _train(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog) -> None:
        raise NotImplementedError

    def _score(self, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _after_fit(self, X: torch.Tensor) -> None:
        """Called on each fitted member with its own training rows (n, d), networks already copied."""

    def latent_size(self, d: int) -> int:
        return latent_size(self.latent_dim, d)

    def member_values(self, name: str) -> list:
        """The value of parameter ``name`` of every member of the stack being trained (in ``_train``;
        this detector's own value outside a stack fit)."""
        return [getattr(d, name) for d in getattr(self, "_stack_members", [self])]

    def member_tensor(self, values, like: torch.Tensor, dims: int = 3) -> torch.Tensor:
        """Per-member numbers as a (S, 1, ..., 1) tensor of ``dims`` dimensions with ``like``'s dtype
        and device, to broadcast over a stack. Each value is rounded to the dtype once, as a Python
        scalar is when it multiplies a tensor, so ``w * t`` equals ``value * t`` bit for bit."""
        return torch.tensor([float(v) for v in values], dtype=like.dtype,
                            device=like.device).view(-1, *([1] * (dims - 1)))

    # ---- fitting ------------------------------------------------------------------------------
    @classmethod
    def _fit_stack(cls, dets, Xs):
        proto = dets[0]
        if Xs[0].ndim != 2 or Xs[0].shape[0] < 2 or Xs[0].shape[1] < 1:
            raise ValueError(f"{cls.__name__} needs a 2-d training array with at least 2 rows, got "
                             f"shape {Xs[0].shape}")
        if not all(np.isfinite(X).all() for X in Xs):
            raise ValueError(f"{cls.__name__}: training rows contain NaN or inf")
        n, d = Xs[0].shape
        device = pick_device(proto.device)
        seeds = [int(det.random_state) for det in dets]
        shape = Shape(d, proto.latent_size(d))
        nets = proto._build(shape, member_generators(seeds)).to(device)
        X = torch.from_numpy(np.stack(Xs)).to(device)  # (S, n, d)
        log = LossLog(len(dets), every=int(proto.log_every))
        proto._stack_members = list(dets)  # per-member parameters: ``member_values``
        try:
            proto._train(nets, X, seeds, log)
        finally:
            del proto._stack_members
        out = []
        for s, det in enumerate(dets):
            if log.diverged[s] is not None:
                out.append(log.diverged[s])
                continue
            det.networks_ = member_copy(nets, s)
            det.shape_ = shape
            det.n_features_in_ = d
            det.device_ = str(device)
            det.history_ = log.history[s]
            with torch.no_grad():
                det._after_fit(X[s])
            out.append(det)
        return out

    def _descend(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog,
                 loss_terms, noise: dict[str, tuple[str, int]] | None = None) -> None:
        """The plain loop of AE, VAE and DAGMM: one Adam step on all parameters per mini-batch.
        ``loss_terms(x (S, b, d), noise {name: (S, batch_size, width)}) -> (objective (S,), terms)``:
        the objective is minimised, every entry of the dict ``terms`` of (S,) tensors is recorded."""
        opt = StackAdam(nets.parameters(), lr=self.lr)
        opt.attach()
        n_iter = int(self.n_iter)
        for it, (x, eps) in enumerate(Feed(X, int(self.batch_size), n_iter, seeds, noise)):
            objective, terms = loss_terms(x, eps)
            opt.zero_grad()
            objective.sum().backward()  # members are independent: the sum trains each on its own
            opt.step()
            log.record(it, force=it == n_iter - 1, **{k: v.detach() for k, v in terms.items()})
            if all_diverged(log):
                break

    # ---- scoring ------------------------------------------------------------------------------
    def anomaly_score(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "networks_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() first")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"{type(self).__name__}: expected rows of {self.n_features_in_} features, "
                             f"got shape {X.shape}")
        if len(X) == 0:
            return np.zeros(0)
        dev = next(self.networks_.parameters()).device
        with torch.no_grad():
            scores = self._score(torch.from_numpy(X).to(dev))
        return np.asarray(torch.as_tensor(scores).double().cpu().numpy(), dtype=np.float64).reshape(-1)
