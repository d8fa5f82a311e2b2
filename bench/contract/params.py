"""Parameter constraints: each method declares, in one place, which values each of its parameters
takes (scikit-learn's ``_parameter_constraints`` idea), and the registry checks every spec against
them before the first fit, so ``lof[n_neighbors=-3]`` is bad input, not a failure deep inside ``fit``.

    class LOF(Detector):
        parameter_constraints = {"n_neighbors": [Interval(int, 1, None)], "novelty": [bool]}

A parameter's list holds the alternatives it may match: an ``Interval``, ``Options`` (a fixed set of
values), ``bool``, ``str`` (any string), ``None`` (the value None) or a ``Check`` (a predicate with a
description). Relations between parameters go in the detector's ``_check_combinations``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable


class InvalidParameter(ValueError):
    """A parameter value the method does not take. ``detail`` is the message without the class name."""

    def __init__(self, owner: str, detail: str, param: str | None = None):
        super().__init__(f"{owner}: {detail}")
        self.detail = detail
        self.param = param  # the parameter at fault, when there is one


@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``int`` or ``float``; a float interval accepts ints too, never bools)
    between ``low`` and ``high`` (None = unbounded); ``closed`` says which ends belong to it."""

    kind: type
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def accepts(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral if self.kind is int else numbers.Real):
            return False
        if isinstance(v, numbers.Real) and math.isnan(float(v)):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        what = "an int" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{what} in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {self.low}"
        if self.high is not None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {self.high}"
        return what


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values (compared with ``==``; a bool never matches 1 or 0)."""

    values: tuple

    def __init__(self, *values):
        object.__setattr__(self, "values", tuple(values))

    def accepts(self, v: Any) -> bool:
        return any(v == o and isinstance(v, bool) == isinstance(o, bool) for o in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.values)


@dataclass(frozen=True)
class Check:
    """Any value ``predicate`` accepts; ``description`` completes "must be ..."."""

    predicate: Callable[[Any], bool]
    description: str

    def accepts(self, v: Any) -> bool:
        try:
            return bool(self.predicate(v))
        except Exception:  # noqa: BLE001 - a predicate that cannot judge the value rejects it
            return False

    def __str__(self) -> str:
        return self.description


def _accepts(constraint, v) -> bool:
    if constraint is None:
        return v is None
    if constraint is bool:
        return isinstance(v, bool)
    if constraint is str:
        return isinstance(v, str)
    return constraint.accepts(v)


def _describe(constraint) -> str:
    return {None: "None", bool: "true or false", str: "a string"}.get(constraint) or str(constraint)


def describe(constraints: list) -> str:
    """``[Interval(int, 1, None), None]`` -> ``"an int >= 1 or None"``."""
    return " or ".join(_describe(c) for c in constraints)


def check(owner: str, constraints: dict[str, list], values: dict[str, Any]) -> None:
    """Raise InvalidParameter for the first value of ``values`` its constraints reject. Parameters
    without a declared constraint are not checked."""
    for name, allowed in constraints.items():
        if name in values and not any(_accepts(c, values[name]) for c in allowed):
            raise InvalidParameter(owner, f"{name} must be {describe(allowed)}, got {values[name]!r}", name)


#: Seeds: the runner sets ``random_state`` from the run's seed (bench.execution.config bounds seeds the same way).
MAX_SEED = 2**32 - 1
RANDOM_STATE = [Interval(int, 0, MAX_SEED)]
