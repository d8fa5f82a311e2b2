"""Settings in one stack (issue 10 "cheap enough to run", issue 11 "the adVAE family as one stack"):
runs that differ in a method's ``member_params`` (adVAE: lambda_, gamma, m_x, m_z, encoder_hinge,
generator_hinge; VAE: lambda_) train as one stack, and every member is bit for bit its solo fit and
its seeds-only stack (weights, scores, history), on both adVAE gradient paths; the runner groups them
and stores what one-spec-at-a-time runs store."""
import numpy as np
import pytest
import torch

from bench.contract import registry
from bench.execution import plan, runner
from bench.execution.config import Experiment, Override
from bench.evaluation.data import REPO_ROOT
from bench.execution.store import Store
from methods.advae import AdVAE
from tests.test_invariance import SHAPES, fitted_state, install_synthetic_catalogue, synthetic

torch.set_num_threads(1)

N_ITER = 6  # iterations 1, 3 and 5 are short last batches (see tests/test_invariance.py)
#: one stack: the adVAE family with transformer (advae, g-advae, generator hinge off) and a sweep's
#: values (margins small enough that their hinge is off at the start, so that each setting matters)
MIXED = ["advae", "advae[m_x=0.001]", "advae[lambda_=0.1]", "advae[gamma=0.05]", "advae[m_z=0.01]",
         "g-advae", "g-advae[lambda_=0.003]", "advae[generator_hinge=false]"]


def make(spec, k, seed, **extra):
    base = {"n_iter": N_ITER, "latent_dim": k, "log_every": 2, "device": "cpu", "L": 16,
            "random_state": seed}
    return registry.build(spec, {**base, **extra})[0]


def same(a, b) -> list[str]:
    sa, sb = fitted_state(a), fitted_state(b)
    return [n for n in sa if not torch.equal(sa[n], sb[n])]




def check_members(specs, X, X_test, k, seeds=(0, 1), **extra):
    """Fit every (spec, seed) in ONE stack. Each member must equal (1) the same member at the same
    place of a seeds-only stack of the same size (its other places: other seeds of its spec), which
    isolates the per-member values from the stack-size arithmetic, and (2) its solo fit."""
    plan = [(spec, s) for spec in specs for s in seeds]
    dets = [make(spec, k, s, **extra) for spec, s in plan]
    cls = type(dets[0])
    stack = cls.fit_group(dets, [X] * len(dets))
    for p, (spec, s) in enumerate(plan):
        got = stack[p]
        assert not isinstance(got, Exception), got
        slot = [make(spec, k, s if q == p else 100 + q, **extra) for q in range(len(plan))]
        refs = [(cls.fit_group(slot, [X] * len(slot))[p], "seeds-only stack, same place"),
                (make(spec, k, s, **extra).fit(X), "solo fit")]
        for ref, what in refs:
            assert not same(got, ref), f"{spec} seed {s}: differs from its {what} in {same(got, ref)[:3]}"
            np.testing.assert_array_equal(got.anomaly_score(X_test), ref.anomaly_score(X_test))
            assert got.history_ == ref.history_, f"{spec} seed {s}: history differs from its {what}"
    return stack


@pytest.mark.parametrize("gradients", ["hand", "autograd"])
@pytest.mark.parametrize("dataset", ["cardio", "optdigits", "pendigits"])
def test_mixed_settings_stack_member_is_its_solo_fit(dataset, gradients):
    X, X_test, k = synthetic(dataset)
    stack = check_members(MIXED, X, X_test, k, gradients=gradients)
    # the settings matter (the test would pass vacuously if every member trained alike; in 6
    # iterations a margin can leave its hinge's state unchanged, so not every pair need differ)
    scores = [d.anomaly_score(X_test) for d in stack[::2]]
    assert len({s.tobytes() for s in scores}) >= len(MIXED) - 2
    # a member without the encoder hinge logs no kl_r, as alone (LossLog ``members``)
    g = stack[2 * MIXED.index("g-advae")]
    assert "kl_r" not in g.history_ and "kl_r" in stack[0].history_


def test_e_advae_family_without_transformer_stacks_its_settings():
    X, X_test, k = synthetic("letter")
    check_members(["e-advae", "e-advae[gamma=0.01]", "e-advae[m_z=20.0,lambda_=0.1]",
                   "advae[transformer=false,generator_hinge=false,encoder_hinge=false]"], X, X_test, k)


def test_vae_lambda_settings_in_one_stack():
    X, X_test, k = synthetic("satellite")
    check_members(["vae", "vae[lambda_=0.1]", "vae[lambda_=0.001]"], X, X_test, k)


@pytest.mark.integration
def test_mixed_stack_on_real_cardio():
    """The paper split of cardio (d = 21, 1324 training rows: the short last batch of 44 rows)."""
    from bench.evaluation import data
    from bench.evaluation.protocols import make_split

    split = make_split(data.load("cardio"), "paper")
    specs = ["advae", "advae[m_x=1.5]", "advae[lambda_=0.001]", "g-advae", "advae[m_z=100.0]"]
    check_members(specs, split.X_train, split.X_test, 7, n_iter=12)


def test_per_member_lambda_uses_the_fused_multiply_add_of_add_alpha():
    """Step 2's g_z + lambda c mu: torch.add(alpha=a) rounds once (fused); the per-member form
    torch.addcmul(g_z, mu, w) with w (S, 1, 1) must round the same, or a swept lambda would not be
    its solo fit. Checked here for the stack and batch sizes the runner forms."""
    g = torch.Generator().manual_seed(0)
    for S, b, k in [(1, 128, 7), (5, 44, 16), (25, 128, 11), (24, 123, 5)]:
        gz, mu = torch.randn(S, b, k, generator=g), torch.randn(S, b, k, generator=g)
        lams = [0.001, 0.003, 0.007, 0.01, 0.03, 0.07, 0.1]
        w = torch.tensor([lams[s % 7] / b for s in range(S)]).view(S, 1, 1)
        got = torch.addcmul(gz, mu, w)
        for s in range(S):
            want = torch.add(gz[s:s + 1].clone(), mu[s:s + 1].clone(), alpha=lams[s % 7] / b)
            assert torch.equal(got[s:s + 1], want), (S, b, k, s)


def test_overridden_definition_keeps_settings_in_separate_stacks():
    """A subclass that overrides a loss definition may read a parameter as a scalar: its settings
    must not share a stack (stack_member_params() is empty, the signature splits them)."""

    class Extra(AdVAE):
        def step2_losses(self, nets, x, lat):
            objective, terms = super().step2_losses(nets, x, lat)
            return objective + 0.0 * self.lambda_ * terms["kl"], terms

    X, X_test, k = synthetic("pendigits")
    params = dict(n_iter=N_ITER, latent_dim=k, L=16, log_every=2)
    dets = [Extra(lambda_=lam, random_state=0, **params) for lam in (0.01, 0.1)]
    assert dets[0].stack_signature() != dets[1].stack_signature()
    fitted = Extra.fit_group(dets, [X, X])
    for det, lam in zip(fitted, (0.01, 0.1)):
        alone = Extra(lambda_=lam, random_state=0, **params).fit(X)
        assert not same(det, alone)


def test_fit_group_still_rejects_differences_outside_member_params():
    X, _, k = synthetic("pendigits")
    with pytest.raises(ValueError, match="differ"):
        AdVAE.fit_group([make("advae", k, 0), make("advae", k, 1, batch_size=64)], [X, X])
    with pytest.raises(ValueError, match="differ"):  # transformer changes the networks
        AdVAE.fit_group([make("advae", k, 0), make("e-advae", k, 1)], [X, X])


# ---- the runner ----------------------------------------------------------------------------------
def test_split_evenly():
    assert [len(p) for p in plan.split_evenly(list(range(60)), 25)] == [20, 20, 20]
    assert [len(p) for p in plan.split_evenly(list(range(120)), 25)] == [24] * 5
    assert [len(p) for p in plan.split_evenly(list(range(7)), 25)] == [7]
    assert sum(plan.split_evenly(list(range(51)), 25), []) == list(range(51))


def test_sensitivity_grid_forms_few_groups_and_the_family_shares_one():
    from bench.execution import config

    exp = config.load(REPO_ROOT / "configs" / "sensitivity.toml")
    groups = plan.make_groups(plan.expand(exp))
    assert sum(map(len, groups)) == 600
    assert len(groups) == 25 and all(len(g) == 24 for g in groups)  # 120 runs per dataset, 5 x 24
    assert all(len({r.dataset for r in g}) == 1 for g in groups)
    paper = config.load(REPO_ROOT / "configs" / "paper.toml").restrict(
        methods=["advae", "e-advae", "g-advae", "vae", "ae"], datasets=["cardio"])
    by_spec = {}
    for i, g in enumerate(plan.make_groups(plan.expand(paper))):
        for r in g:
            by_spec.setdefault(r.spec, set()).add(i)
    assert by_spec["advae"] == by_spec["g-advae"]  # one stack of 10
    assert not by_spec["e-advae"] & by_spec["advae"]  # no transformer: other networks
    assert not by_spec["vae"] & by_spec["ae"]


@pytest.fixture
def synth(monkeypatch):
    return install_synthetic_catalogue(monkeypatch, ("cardio", "pendigits"))


def test_sweep_through_the_runner_stores_what_one_spec_at_a_time_stores(tmp_path, synth):
    specs = ("advae[m_x=0.5]", "advae[m_x=2.5]", "advae[lambda_=0.001]", "g-advae", "e-advae",
             "vae[lambda_=0.1]", "vae")
    datasets = tuple(synth)
    overrides = tuple(Override(("advae", "e-advae", "g-advae", "vae"), (f"synth-{n}",),
                               {"latent_dim": SHAPES[n][2], "n_iter": N_ITER, "log_every": 2, "L": 16})
                      for n in ("cardio", "pendigits"))

    def run(out, methods):
        exp = Experiment(name="t", protocol="paper", seeds=(0, 1, 2), threshold="kde", alpha=0.1,
                         datasets=datasets, methods=methods, overrides=overrides)
        counts = runner.run_experiment(exp, out, workers=1, progress=False)
        assert counts["failed"] == 0
        store = Store(out)
        df = store.frame(with_blobs=True)
        store.close()
        assert (df["status"] == "ok").all()
        return {r.key: (r.spec, r.dataset, r.seed, r.group_size, np.r_[r.train_scores, r.test_scores])
                for r in df.itertuples()}

    together = run(tmp_path / "together", specs)
    assert {v[3] for v in together.values() if v[0].startswith(("advae", "g-advae"))} == {12}
    apart = {}
    for i, spec in enumerate(specs):
        apart.update(run(tmp_path / f"apart{i}", (spec,)))
    assert set(together) == set(apart) and len(together) == len(specs) * 2 * 3
    for key, (spec, dataset, seed, _, scores) in together.items():
        np.testing.assert_array_equal(scores, apart[key][4], err_msg=f"{spec} {dataset} {seed}")


def test_fewer_groups_than_slots_are_halved_until_every_slot_has_one():
    exp = Experiment(name="t", protocol="paper", seeds=(0, 1, 2, 3, 4), threshold="kde", alpha=0.1,
                     datasets=("cardio",), methods=tuple(f"advae[m_x={v}]" for v in (0.5, 1, 1.5, 2, 2.5)))
    runs = plan.expand(exp)
    assert [len(g) for g in plan.make_groups(runs)] == [25]
    assert [len(g) for g in plan.make_groups(runs, slots=2)] == [13, 12]
    assert [len(g) for g in plan.make_groups(runs, slots=4)] == [7, 6, 6, 6]
    halves = plan.make_groups(runs, slots=2)
    assert sum(halves, []) == runs  # the same runs, in order
    one = [r for r in runs if r.spec == "advae[m_x=2.5]"]
    assert [len(g) for g in plan.make_groups(one, slots=2)] == [3, 2]
    assert [len(g) for g in plan.make_groups(one[:1], slots=2)] == [1]
    # enough groups already: untouched; a fit that serves every seed is never split
    assert [len(g) for g in plan.make_groups(runs, slots=1)] == [25]
    pca = plan.expand(Experiment(name="t", protocol="paper", seeds=(0, 1, 2), threshold="kde",
                                   alpha=0.1, datasets=("cardio",), methods=("pca",)))
    assert [len(g) for g in plan.make_groups(pca, slots=2)] == [3]


@pytest.mark.integration
def test_a_group_halved_over_two_workers_stores_what_one_worker_stores(tmp_path):
    from bench.execution.executors import local_executor

    exp = Experiment(name="t", protocol="paper", seeds=(0, 1, 2, 3), threshold="kde", alpha=0.1,
                     datasets=("letter",), methods=("advae[n_iter=12,L=8]",))
    runner.run_experiment(exp, tmp_path / "one", workers=1, progress=False)
    runner.run_experiment(exp, tmp_path / "two", progress=False, executor=local_executor(2))
    frames = []
    for d in ("one", "two"):
        store = Store(tmp_path / d)
        frames.append(store.frame(with_blobs=True).sort_values("key").reset_index(drop=True))
        store.close()
    one, two = frames
    assert list(one.group_size) == [4] * 4 and sorted(two.group_size) == [2] * 4
    assert list(one.key) == list(two.key) and set(two.status) == {"ok"}
    for a, b in zip(one.itertuples(), two.itertuples()):
        np.testing.assert_array_equal(a.train_scores, b.train_scores)
        np.testing.assert_array_equal(a.test_scores, b.test_scores)
