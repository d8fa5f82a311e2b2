"""How adVAE trains: Algorithm 1's loop over mini-batches with its two Adam optimizers, through
autograd from the model's definitions (methods/advae/model.py) or through a registered accelerator
that computes the same gradients (``gradients.py``: "hand"); and how its runs train together, the
settings that may differ inside one stack becoming per-member tensors (engine/members.py). A member of
a stack is bit for bit its solo fit (tests/test_sweep_stack.py, tests/test_invariance.py)."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from bench.execution.telemetry import LossLog
from engine.accelerators import Accelerated
from engine.invariant import StackAdam
from engine.members import PerMember
from engine.stacked import Feed, all_diverged, rows


class AdVAETraining(Accelerated):
    """Mixin of ``AdVAE``: the training loop, the accelerators, the stacking hooks (the runner's
    ``stack_member_params`` and ``stack_signature``) and the per-member parameters the definitions read
    (``_per_member``)."""


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

    # ---- Algorithm 1 ----------------------------------------------------------------------------
    def build_optimizers(self, nets: nn.ModuleDict) -> tuple[StackAdam, StackAdam]:
        """Algorithm 1's two Adam optimizers: G and T (step 1), E (step 2). Parameter order: G's then
        T's, E's (each in ``parameters()`` order), as the hand-written gradients come. The networks'
        parameters become views of the optimizers' flat buffers (build after ``.to(device)``)."""
        gt = [*nets["G"].parameters(), *(nets["T"].parameters() if "T" in nets else [])]
        return StackAdam(gt, self.lr), StackAdam(list(nets["E"].parameters()), self.lr)

    def _train(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog) -> None:
        self.train_stack(nets, X, seeds, log)

    def train_stack(self, nets: nn.ModuleDict, X: torch.Tensor, seeds: list[int], log: LossLog) -> None:
        """Algorithm 1 for a stack of S members, X (S, n, d), through the "hand" accelerator when
        ``uses_hand_gradients()`` (compiled into one graph per iteration with ``compile``), else through
        autograd (eager). Every ``log_every`` iterations (and at the
        last) every loss term is recorded per member; a non-finite value marks that member diverged
        (LossLog), and training stops once every member has."""
        opt_GT, opt_E = self.build_optimizers(nets)  # before the views: parameters move to flat buffers
        n_iter = int(self.n_iter)
        k = nets["E"].fcmu.weight.shape[2]
        feed = Feed(X, int(self.batch_size), n_iter, seeds,
                    noise={"eps": ("normal", (2 if "T" in nets else 1) * k)})
        if self.uses_hand_gradients():
            hand = self.accelerators["hand"](self)
            step = hand.compiled_iteration if self.compile else hand.iteration
        else:  # autograd: eager, whatever ``compile`` says
            step = self._autograd_iteration
        step = step(nets, opt_GT, opt_E)
        with self.members_in_training():
            members = self.term_members()
            for i, (x, noise) in enumerate(feed):
                record = i % int(self.log_every) == 0 or i == n_iter - 1
                terms = step(x, rows(noise["eps"], x.shape[1]), record)
                if record:
                    log.record(i, force=True, members=members, **terms)
                    if all_diverged(log):
                        break

    def _autograd_iteration(self, nets, opt_GT: StackAdam, opt_E: StackAdam):
        """One iteration through autograd from ``sample_latents`` / ``step1_losses`` /
        ``step2_losses`` (the reference the hand path is tested against, and the path of a subclass
        that changes a definition)."""
        opt_GT.attach()
        opt_E.attach()

        def iteration(x, eps, record: bool) -> dict:
            lat = self.sample_latents(nets, x, eps)
            objective, terms1 = self.step1_losses(nets, x, lat)  # step 1: G and T
            opt_GT.zero_grad()
            objective.sum().backward(inputs=opt_GT.params)  # members are independent: sum = each
            opt_GT.step()
            objective, terms2 = self.step2_losses(nets, x, lat)  # step 2: E, with the updated G
            opt_E.zero_grad()
            objective.sum().backward(inputs=opt_E.params)
            opt_E.step()
            return {k: v.detach() for k, v in {**terms1, **terms2}.items()} if record else {}

        return iteration
