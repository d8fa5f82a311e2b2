"""Parameter constraints (bench/contract/params.py): every method declares which values each parameter takes,
and a rejected value is bad input before the first fit."""
import pytest

from bench.contract import params, registry
from bench.cli import main
from bench.contract.params import Check, Interval, InvalidParameter, Options


@pytest.mark.parametrize("constraint, good, bad", [
    (Interval(int, 1, None), [1, 7], [0, -3, 2.0, True, "3"]),
    (Interval(float, 0, 1, closed="right"), [0.5, 1, 1.0], [0, 0.0, 5, float("nan"), False]),
    (Interval(float, 0, 1, closed="left"), [0, 0.99], [1.0, -0.1]),
    (Options("auto", "scale"), ["auto"], ["Auto", 1, None]),
    (Options(1), [1], [True]),  # a bool never passes for a number
    (Check(lambda v: v > 2, "above 2"), [3], [1, "x"]),  # a predicate that raises rejects
])
def test_constraints(constraint, good, bad):
    for v in good:
        params.check("M", {"p": [constraint]}, {"p": v})
    for v in bad:
        with pytest.raises(InvalidParameter) as err:
            params.check("M", {"p": [constraint]}, {"p": v})
        assert err.value.param == "p" and err.value.detail.startswith(f"p must be {constraint}")


def test_alternatives_are_described_together():
    with pytest.raises(InvalidParameter, match=r"^M: k must be an int >= 1 or None, got 0$"):
        params.check("M", {"k": [Interval(int, 1, None), None]}, {"k": 0})
    params.check("M", {"k": [Interval(int, 1, None), None]}, {"k": None})
    with pytest.raises(InvalidParameter, match="flag must be true or false, got 'yes'"):
        params.check("M", {"flag": [bool]}, {"flag": "yes"})


@pytest.mark.parametrize("name", registry.names())
def test_every_parameter_of_every_method_is_declared_and_its_default_accepted(name):
    ent = registry.entry(name)
    det, _, resolved = registry.build(name, dict(ent.cls.quick_params))
    undeclared = set(resolved) - set(ent.cls.parameter_constraints)
    assert not undeclared, f"{name}: declare parameter_constraints for {sorted(undeclared)}"
    det.validate_params()


@pytest.mark.parametrize("spec, message", [
    ("lof[n_neighbors=-3]", "method spec 'lof[n_neighbors=-3]': n_neighbors must be an int >= 1, got -3"),
    ("ocsvm[nu=5]", "method spec 'ocsvm[nu=5]': nu must be a number in (0, 1], got 5"),
    ("advae[n_iter=-5]", "method spec 'advae[n_iter=-5]': n_iter must be an int >= 1, got -5"),
    ("sod[ref_set=30]", "ref_set (30) must be below n_neighbors (20)"),
    ("advae[transformer=false]", "generator_hinge=True needs transformer=True"),
    ("gan[score=bogus]", "score must be one of 'paper', 'two-sided', 'snapshots', 'anogan', got 'bogus'"),
    ("mo-gaal[score=anogan]", "score must be one of 'paper', 'two-sided', 'snapshots', got 'anogan'"),
    ("wgan-gp[n_snapshots=0]", "n_snapshots must be an int >= 1, got 0"),
    ("gan[fm_weight=2]", "fm_weight must be a number in [0, 1], got 2"),
])
def test_a_rejected_parameter_is_bad_input_before_any_fit(tmp_path, capsys, spec, message):
    """Checked for every spec before the first fit: a good spec listed first is not run either."""
    out = tmp_path / "out"
    assert main(["run", "--methods", f"iforest,{spec}", "--datasets", "letter", "--seeds", "0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (out / "runs.sqlite").exists()
    assert not (out / "runs.sqlite").exists()  # nothing ran, nothing was stored


def test_a_rejected_value_from_a_config_override_says_so():
    with pytest.raises(Exception, match="comes from a config override"):
        registry.build("lof", {"n_neighbors": 0})


def test_direct_use_validates_too(planted):
    from methods.classical import LOF

    with pytest.raises(InvalidParameter, match="LOF: n_neighbors"):
        LOF(n_neighbors=0).fit(planted[0])
