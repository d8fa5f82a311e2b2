"""Accelerators: faster ways to compute what a method's definitions compute.

A deep method states its model as plain definitions (its losses, term by term) and trains them
through autograd. An accelerator computes the same thing another way, e.g. gradients written out by
hand, and registers itself on the method's class (``@AdVAE.accelerator("hand")``) from a file of its
own: the model file never imports it, and the model trains without it. The ``gradients`` parameter
chooses: "auto" (the default) uses the "hand" accelerator wherever the definitions are the class's own
(a subclass that overrides one trains through autograd, so a new loss term needs no derivative),
"hand" insists on it, "autograd" never uses it. Tests check each accelerator against autograd.
"""
from __future__ import annotations

from bench.contract.params import Options

#: Values of the ``gradients`` parameter.
GRADIENTS = ("auto", "hand", "autograd")
#: Its constraint, for a method's ``parameter_constraints``.
GRADIENTS_CONSTRAINT = [Options(*GRADIENTS)]


class Accelerated:
    """Mixin of a method whose ``definitions`` (names of its methods) an accelerator may compute.
    The class that sets ``definitions`` gets a registry of its own; its subclasses share it."""

    definitions: tuple[str, ...] = ()
    accelerators: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "definitions" in cls.__dict__:
            cls.accelerators = {}

    @classmethod
    def accelerator(cls, name: str):
        """Class decorator: register an accelerator (a class taking the detector) under ``name``."""
        def deco(acc):
            cls.accelerators[name] = acc
            return acc
        return deco

    @classmethod
    def _owner(cls) -> type:
        """The class that states the definitions (the paper's model)."""
        return next(c for c in cls.__mro__ if "definitions" in c.__dict__)

    def _overridden(self) -> list[str]:
        owner = self._owner()
        return [n for n in owner.definitions if getattr(type(self), n) is not getattr(owner, n)]

    def paper_definitions(self) -> bool:
        """Whether the definitions are the defining class's: then an accelerator computes them."""
        return not self._overridden()

    def uses_hand_gradients(self) -> bool:
        return "hand" in self.accelerators and (
            self.gradients == "hand" or (self.gradients == "auto" and self.paper_definitions()))

    def _check_combinations(self) -> None:
        super()._check_combinations()
        self._check_accelerator()

    def _check_accelerator(self) -> None:
        """gradients="hand" needs the class's own definitions and the accelerator loaded."""
        if self.gradients == "hand" and not self.paper_definitions():
            raise self._invalid(
                f"gradients='hand' needs the paper's loss definitions ({self._owner().__name__}'s), but "
                f"{', '.join(self._overridden())} is overridden; use gradients='auto' or 'autograd'")
        if self.gradients == "hand" and "hand" not in self.accelerators:
            raise self._invalid(f"gradients='hand' needs the accelerator of {type(self).__module__}'s "
                                "package (gradients.py), which is not loaded")
