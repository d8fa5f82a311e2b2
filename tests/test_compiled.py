"""The compiled training step (engine/compiled.py): a member of a compiled stack is bit for bit its
compiled solo fit, the compiled path agrees with the eager one within float tolerance, and the
config's ``compile`` switch reaches the methods that have the parameter (and only them).

One tiny shape (d = 6, k = 2; 300 rows: batches of 128, 128 and the short 44 of an epoch), six
iterations: iteration 0 is logged (eager), the short batches run eagerly, the others compiled.
Inductor caches the graphs on disk, so a second run of these tests compiles nothing."""
import numpy as np
import pytest
import torch

from bench import BenchError
from bench.contract.params import InvalidParameter
from bench.contract.registry import build, entry
from engine import compiled

torch.set_num_threads(1)

pytestmark = pytest.mark.skipif(compiled.compiler_missing() is not None, reason="no C++ compiler")

N_ITER = 6


def rows(seed: int = 0, n: int = 300, d: int = 6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 30, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d))
    X = ((X - X.min(0)) / (X.max(0) - X.min(0))).astype(np.float32)
    return X[:n], X[n:]


def make(spec: str, seed: int, compile: bool, **extra):
    if "advae" in spec or spec.startswith("vae"):
        extra.setdefault("L", 8)
    if spec.startswith("wgan-gp"):
        extra.setdefault("n_critic", 2)  # a smaller graph to compile
    return build(spec, {"n_iter": N_ITER, "latent_dim": 2, "log_every": 100, "device": "cpu",
                        "random_state": seed, "compile": compile, **extra})[0]


def state(det) -> dict:
    return {f"{net}.{key}": value for net, module in det.networks_.items()
            for key, value in module.state_dict().items()}


@pytest.mark.parametrize("spec", ["advae", "wgan-gp"])
def test_compiled_member_is_its_compiled_solo_fit_and_close_to_eager(spec):
    X, X_test = rows()
    cls = entry(spec).cls
    stack = cls.fit_group([make(spec, s, True) for s in (0, 1)], [X, X])
    assert not any(isinstance(d, Exception) for d in stack), stack
    solo = make(spec, 1, True).fit(X)
    for key, value in state(solo).items():
        assert torch.equal(value, state(stack[1])[key]), key
    np.testing.assert_array_equal(solo.anomaly_score(X_test), stack[1].anomaly_score(X_test))
    assert compiled.last_step is not None and compiled.last_step().calls >= 2  # it ran compiled

    eager = cls.fit_group([make(spec, s, False) for s in (0, 1)], [X, X])
    for c, e in zip(stack, eager):
        a, b = c.anomaly_score(X_test), e.anomaly_score(X_test)
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-5)


def test_mixed_settings_stack_on_the_compiled_path():
    """adVAE's settings as per-member tensors (a sweep, the family of one dataset) in one compiled stack."""
    X, X_test = rows(1)
    dets = [make("advae", 0, True), make("advae", 0, True, m_x=0.5, gamma=0.01)]
    stack = type(dets[0]).fit_group(dets, [X, X])
    solo = make("advae", 0, True, m_x=0.5, gamma=0.01).fit(X)
    for key, value in state(solo).items():
        assert torch.equal(value, state(stack[1])[key]), key
    assert not torch.equal(state(stack[0])["G.fc3.weight"], state(stack[1])["G.fc3.weight"])


def test_compile_needs_a_compiler(monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(BenchError, match="C\\+\\+ compiler"):
        make("advae", 0, True)
    make("advae", 0, False).validate_params()  # eager needs none
    det = make("wgan-gp", 0, False)
    det.compile = True
    with pytest.raises(InvalidParameter, match="set compile = false"):
        det.validate_params()


def test_the_config_switch_reaches_the_methods_with_the_parameter(tmp_path):
    from bench.execution import config, plan

    cfg = tmp_path / "c.toml"
    cfg.write_text('protocol = "paper"\nseeds = [0]\ndatasets = ["cardio"]\ncompile = true\n'
                   'methods = ["advae", "gan", "wgan-gp[compile=false]", "lof"]\n')
    exp = config.load(cfg)

    def compiles(runs):
        return {r.spec: r.params.get("compile") for r in runs}

    assert compiles(plan.expand(exp)) == {"advae": True, "gan": None, "wgan-gp[compile=false]": False,
                                          "lof": None}
    assert compiles(plan.expand(exp, quick=True)) == {  # --quick stays eager
        "advae": False, "gan": None, "wgan-gp[compile=false]": False, "lof": None}
    assert compiles(plan.expand(exp.restrict(compile=False))) == {  # run --eager
        "advae": False, "gan": None, "wgan-gp[compile=false]": False, "lof": None}
    keys = {r.spec: r.key for r in plan.expand(exp)}
    assert keys["advae"] != {r.spec: r.key for r in plan.expand(exp.restrict(compile=False))}["advae"]
    cfg.write_text(cfg.read_text().replace("compile = true", 'compile = "yes"'))
    with pytest.raises(BenchError, match="compile"):
        config.load(cfg)


def test_a_compiled_step_that_disagrees_with_the_eager_one_fails_loudly():
    """The first calls are checked against the eager step: a graph whose gradients differ from the
    eager ones raises instead of training on."""
    from engine.invariant import StackAdam

    w = torch.nn.Parameter(torch.ones(1, 4, 4))
    opt = StackAdam([w], lr=1e-2)

    def body(params, grads, update):
        grads[0][0].copy_(params[0][0] * 0.5)  # the gradient this "graph" computes
        update(0)

    def eager(factor):
        def step():
            opt.grads[0].copy_(w.detach() * factor)
            opt.step()
        return step

    with pytest.raises(RuntimeError, match="disagrees with the eager one"):
        compiled.CompiledStep([opt], body, reference=eager(0.7))()
    ok = compiled.CompiledStep([opt], body, reference=eager(0.5))
    for _ in range(4):
        ok()  # the eager reference agrees
    assert ok.calls == 4 and opt.t == 1 + 4  # the failed call stepped too; its run fails anyway
