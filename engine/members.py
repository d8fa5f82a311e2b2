"""The parameters that differ between the members of a stack (a method's ``member_params``: a sweep's
settings, variants of one method trained together), as tensors that broadcast over the stack."""
from __future__ import annotations

import torch


class PerMember:
    """The per-member parameters (``type(det).member_params``) of the stack being trained:
    ``num(key, like)`` is (S, 1, ...) with one number per member (rounded to ``like``'s dtype once, as a
    Python scalar is when it multiplies a tensor, so ``w * t`` is ``value * t`` bit for bit),
    ``mask(switch, like)`` the same as booleans, ``only(switch, t)`` zeroes t for the members whose
    switch is off (``torch.where``: a value there never leaks, even a non-finite one). Outside a stack
    fit, the detector's own values (S = 1, broadcast)."""

    def __init__(self, det):
        names = type(det).member_params
        self.params = [dict(zip(names, vals)) for vals in zip(*(det.member_values(n) for n in names))]
        self._cache: dict = {}

    def all(self, switch: str) -> bool:
        return all(p[switch] for p in self.params)

    def any(self, switch: str) -> bool:
        return any(p[switch] for p in self.params)

    def members(self, switch: str) -> list[bool]:
        return [bool(p[switch]) for p in self.params]

    def num(self, key, like: torch.Tensor, fn=None, dims: int | None = None) -> torch.Tensor:
        """Per-member numbers ``fn(params of member s)`` (default: the parameter named ``key``)."""
        dims = like.dim() if dims is None else dims
        k = (key, dims, like.dtype, like.device)
        t = self._cache.get(k)
        if t is None:
            fn = fn or (lambda p: p[key])
            t = self._cache[k] = torch.tensor([float(fn(p)) for p in self.params], dtype=like.dtype,
                                              device=like.device).view(-1, *([1] * (dims - 1)))
        return t

    def mask(self, switch: str, like: torch.Tensor, dims: int | None = None) -> torch.Tensor:
        dims = like.dim() if dims is None else dims
        k = (switch, dims, torch.bool, like.device)
        t = self._cache.get(k)
        if t is None:
            t = self._cache[k] = torch.tensor(self.members(switch), device=like.device).view(
                -1, *([1] * (dims - 1)))
        return t

    def only(self, switch: str, t: torch.Tensor) -> torch.Tensor:
        return t if self.all(switch) else torch.where(self.mask(switch, t), t, 0.0)
