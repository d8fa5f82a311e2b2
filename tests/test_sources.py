"""The run key's source digest (bench/contract/sources.py): an edit to a method's file or to a file it trains
with recomputes its runs; an edit elsewhere does not."""
import inspect
import shutil
from pathlib import Path

from bench.contract import registry, sources
from bench.execution import runner
from bench.execution.config import Experiment
from bench.evaluation.data import REPO_ROOT


def _copy_methods(tmp_path: Path) -> Path:
    pkg = tmp_path / "methods"
    shutil.copytree(REPO_ROOT / "methods", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def _digest(pkg: Path, name: str) -> str:
    return sources.digest_files(sources.source_files(pkg / name), pkg.parent)


def test_advae_digest_follows_its_imports_both_ways(tmp_path):
    pkg = _copy_methods(tmp_path)
    files = {p.name for p in sources.source_files(pkg / "advae.py")}
    assert files == {"advae.py", "backbone.py", "invariant.py", "stacked.py"}
    before = {n: _digest(pkg, n) for n in ("advae.py", "ae.py", "classical.py")}

    (pkg / "backbone.py").write_text((pkg / "backbone.py").read_text() + "\n# an edit\n")
    after = {n: _digest(pkg, n) for n in before}
    assert after["advae.py"] != before["advae.py"] and after["ae.py"] != before["ae.py"]
    assert after["classical.py"] == before["classical.py"]  # does not train with the backbone

    (pkg / "gan.py").write_text((pkg / "gan.py").read_text() + "\n# unrelated\n")
    (pkg / "advae_tools.py").write_text((pkg / "advae_tools.py").read_text() + "\n# a tool\n")
    assert {n: _digest(pkg, n) for n in before} == after  # nobody imports those files

    (pkg / "advae.py").write_text((pkg / "advae.py").read_text().replace("m_z: float = 40.0",
                                                                          "m_z: float = 41.0"))
    assert _digest(pkg, "advae.py") != after["advae.py"]
    assert _digest(pkg, "ae.py") == after["ae.py"]


def test_relative_and_package_imports_count(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from . import b\nfrom .c import thing\nimport os\n")
    (pkg / "b.py").write_text("from mypkg import d\n")
    (pkg / "c.py").write_text("thing = 1\n")
    (pkg / "d.py").write_text("x = 1\n")
    (pkg / "e.py").write_text("x = 2\n")
    assert [p.name for p in sources.source_files(pkg / "a.py")] == ["a.py", "b.py", "c.py", "d.py"]


def test_run_key_includes_the_digest(monkeypatch):
    exp = Experiment(name="t", protocol="paper", seeds=(0,), threshold="kde", alpha=0.1,
                     datasets=("letter",), methods=("ae", "pca"))
    keys = {r.spec: r.key for r in runner.expand(exp)}
    real = sources.method_digest
    ae_cls = registry.entry("ae").cls
    monkeypatch.setattr(runner, "method_digest", lambda cls: "edited" if cls is ae_cls else real(cls))
    edited = {r.spec: r.key for r in runner.expand(exp)}
    assert edited["ae"] != keys["ae"] and edited["pca"] == keys["pca"]
    assert inspect.getsourcefile(ae_cls).endswith("ae.py")
