import numpy as np
import pytest

from bench import BenchError
from bench.contract import registry


def test_parse_spec_types():
    name, p = registry.parse_spec('ocsvm[nu=0.05, kernel=rbf, shrinking=true, n=3, s="a b"]')
    assert name == "ocsvm"
    assert p == {"nu": 0.05, "kernel": "rbf", "shrinking": True, "n": 3, "s": "a b"}
    assert isinstance(p["n"], int)
    assert registry.parse_spec("lof") == ("lof", {})


def test_format_spec_round_trip():
    spec = registry.format_spec("ocsvm", {"nu": 0.05, "kernel": "rbf", "s": "a b"})
    assert spec == 'ocsvm[kernel=rbf,nu=0.05,s="a b"]'
    assert registry.parse_spec(spec) == ("ocsvm", {"nu": 0.05, "kernel": "rbf", "s": "a b"})


@pytest.mark.parametrize("bad", ["ocsvm[nu]", "ocsvm[nu=0.1", "ocsvm[=3]", "oc svm", "ocsvm[1x=2]"])
def test_malformed_spec(bad):
    with pytest.raises(BenchError, match="malformed"):
        registry.parse_spec(bad)


def test_unknown_method_suggests_closest():
    with pytest.raises(BenchError, match="ocsvm"):
        registry.build("ocsvn")


def test_unknown_parameter_suggests_closest():
    with pytest.raises(BenchError, match="no parameter 'nuu'. Did you mean: nu"):
        registry.build("ocsvm[nuu=0.1]")


def test_precedence_default_override_spec():
    det, name, params = registry.build("ocsvm[nu=0.2]", {"nu": 0.05, "gamma": 0.5})
    assert name == "ocsvm" and params["nu"] == 0.2 and params["gamma"] == 0.5
    det, _, params = registry.build("ocsvm", {"nu": 0.05})
    assert params["nu"] == 0.05
    assert registry.build("ocsvm")[2]["nu"] == 0.1  # the stated default


def test_pyod_spec(planted):
    X_train, X_test, y = planted
    det, name, params = registry.build("pyod:KNN[n_neighbors=7]")
    assert name == "pyod:KNN" and params["params"] == {"n_neighbors": 7}
    s = det.fit(X_train).anomaly_score(X_test)
    assert s.shape == (len(X_test),) and s[y == 1].mean() > s[y == 0].mean()
    with pytest.raises(BenchError, match="NotADetector"):
        registry.build("pyod:NotADetector")
    with pytest.raises(BenchError, match="pyod:KNN"):
        registry.build("pyod:KNN[no_such=1]")


def test_entry_point_group(monkeypatch):
    from bench.contract.base import Detector

    class Plugin(Detector):
        """A third-party detector."""

        def __init__(self, k=1):
            self.k = k

        def fit(self, X):
            return self

        def anomaly_score(self, X):
            return np.zeros(len(X))

    class EP:
        name = "third-party"

        def load(self):
            return Plugin

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [EP()] if group == registry.ENTRY_POINT_GROUP else [])
    try:
        assert "third-party" in registry.names()
        assert registry.build("third-party[k=3]")[2] == {"k": 3}
    finally:
        registry._REGISTRY.pop("third-party", None)


def test_plumbing_never_imports_a_definition():
    """bench/ is plumbing: no module of it imports the methods package (the registry loads it by name,
    and ``pyod:`` specs resolve through the namespace methods/classical.py registers)."""
    import ast

    from bench.evaluation.data import REPO_ROOT

    offenders = []
    for path in sorted((REPO_ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {m}" for m in mods if m.split(".")[0] == registry.DEFINITIONS]
    assert offenders == []


def test_namespaces():
    with pytest.raises(BenchError, match=r"unknown method namespace 'nope:' in 'nope:KNN' \(known: pyod:\)"):
        registry.build("nope:KNN")
    ent = registry.entry("pyod:KNN")
    assert ent.name == "pyod:KNN" and ent.description and ent.make is not None


def test_unknown_pyod_class_prints_nothing_but_the_error(tmp_path):
    """Looking for a class through PyOD's modules imports some that print an install hint for an
    optional dependency ("please install combo first"); none of that reaches the user."""
    import subprocess
    import sys

    from bench.evaluation.data import REPO_ROOT

    proc = subprocess.run([sys.executable, str(REPO_ROOT / "run_bench.py"), "run", "--methods", "pyod:Nope",
                           "--datasets", "letter", "--out", str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: PyOD has no detector class 'Nope' (spec pyod:Nope); PyOD's detectors are listed at "
        "pyod.readthedocs.io"]
