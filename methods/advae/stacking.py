"""How adVAE's runs train together: the settings that may differ inside one stack and the per-member
tensors they become (engine/members.py). A member of a stack is bit for bit its solo fit
(tests/test_sweep_stack.py, tests/test_invariance.py)."""
from __future__ import annotations

import contextlib

from engine.members import PerMember


class AdVAEStacking:
    """Mixin of ``AdVAE``: its stacking hooks (the runner's ``stack_member_params`` and
    ``stack_signature``) and the per-member parameters its definitions read (``_per_member``)."""

    #: Settings that train together in one stack (a sweep, the adVAE family of one dataset): the
    #: weights and margins as per-member vectors, the two hinge switches as per-member masks (they only
    #: zero terms). ``transformer`` changes the networks and the noise, so it is shared by a stack.
    member_params = ("lambda_", "gamma", "m_x", "m_z", "encoder_hinge", "generator_hinge")
    max_group_size = 25  # 5 settings x 5 seeds

    def stack_member_params(self) -> tuple[str, ...]:
        """Per-member values need the paper's definitions: an overridden definition may read a
        parameter as a scalar, so its settings train in separate stacks."""
        return self.member_params if self.paper_definitions() else ()

    def stack_signature(self) -> tuple:
        """Step 1 passes z and z_T through G as one product of 2b rows when the transformer is on and
        a hinge compares G(z_T) (else G(z) alone, b rows), and a product's rows round with the row
        count: members with and without that pass train in separate stacks."""
        return (*super().stack_signature(),
                bool(self.transformer and (self.encoder_hinge or self.generator_hinge)))

    def _per_member(self) -> PerMember:
        pm = getattr(self, "_pm", None)
        return pm if pm is not None else PerMember(self)

    @contextlib.contextmanager
    def members_in_training(self):
        """While a stack trains: its per-member parameters, built once."""
        self._pm = PerMember(self)
        try:
            yield self._pm
        finally:
            del self._pm

    def term_members(self) -> dict[str, list[bool]]:
        """The logged terms only some members of the stack have (LossLog ``members``)."""
        pm = self._per_member()
        out = {}
        for switch, names in (("encoder_hinge", ("kl_r", "kl_Tr")), ("generator_hinge", ("mse_r_Tr",))):
            if not pm.all(switch):
                out.update({n: pm.members(switch) for n in names})
        return out
