"""The run key's source digest (bench/contract/sources.py): an edit to what a method computes, in its
file or in a file it trains with, recomputes its runs; an edit elsewhere, a docstring or comment, or a
move of code between files and packages does not."""
import inspect
import shutil
from pathlib import Path

from bench.contract import registry, sources
from bench.evaluation.data import REPO_ROOT
from bench.execution import plan, runner
from bench.execution.config import Experiment

PROJECT = {"bench", "engine", "methods", "tools"}


def _copy_project(tmp_path: Path) -> Path:
    for pkg in ("methods", "engine"):
        shutil.copytree(REPO_ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _digest(root: Path, rel: str) -> str:
    path = root / rel
    starts = sorted(path.parent.glob("*.py")) if path.parent.parent.name == "methods" else [path]
    files = {f for s in starts for f in sources.source_files(s, root, {"methods", "engine"})}
    return sources.digest_files(sorted(files), PROJECT)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_advae_digest_follows_its_package_and_imports(tmp_path):
    root = _copy_project(tmp_path)
    files = {p.relative_to(root).as_posix()
             for s in sorted((root / "methods" / "advae").glob("*.py"))
             for p in sources.source_files(s, root, {"methods", "engine"})}
    assert {"methods/advae/model.py", "methods/advae/gradients.py", "methods/advae/training.py",
            "engine/backbone.py", "engine/invariant.py", "engine/stacked.py",
            "engine/members.py"} <= files
    assert not any(f.startswith("bench/") for f in files)  # plumbing is never followed
    names = ("methods/advae/model.py", "methods/ae.py", "methods/classical.py")
    before = {n: _digest(root, n) for n in names}

    _edit(root / "engine" / "backbone.py", "MAX_HIDDEN = 64", "MAX_HIDDEN = 65")  # a change of what it computes
    after = {n: _digest(root, n) for n in names}
    assert after[names[0]] != before[names[0]] and after[names[1]] != before[names[1]]
    assert after[names[2]] == before[names[2]]  # does not train with the backbone

    _edit(root / "methods" / "advae" / "gradients.py", "g_r = (x_r - x) * (2.0 * c)",
          "g_r = (x_r - x) * (2.0 * c) + 0.0")  # the accelerator counts, though the model does not import it
    assert _digest(root, names[0]) != after[names[0]]
    assert _digest(root, names[1]) == after[names[1]]


def test_docstrings_comments_and_moves_are_not_edits(tmp_path):
    root = _copy_project(tmp_path)
    before = _digest(root, "methods/ae.py")
    ae = root / "methods" / "ae.py"
    ae.write_text(ae.read_text().replace('"""', '"""Reworded. ', 1) + "\n# a comment\n")
    assert _digest(root, "methods/ae.py") == before
    # engine/ renamed to core/: the files move and every import is rewritten; nothing is computed otherwise
    (root / "engine").rename(root / "core")
    for f in [*root.rglob("*.py")]:
        f.write_text(f.read_text().replace("engine.", "core.").replace("from engine import", "from core import"))
    files = sources.source_files(root / "methods" / "ae.py", root, {"methods", "core"})
    assert any(f.parent.name == "core" for f in files)
    assert sources.digest_files(files, PROJECT | {"core"}) == before


def test_an_import_from_outside_the_project_is_an_edit(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from torch import sigmoid\n\ndef f(x):\n    return sigmoid(x)\n")
    one = sources.digest_files([pkg / "a.py"], {"mypkg"})
    (pkg / "a.py").write_text("from mypkg.b import sigmoid\n\ndef f(x):\n    return sigmoid(x)\n")
    assert sources.digest_files([pkg / "a.py"], {"mypkg"}) != one


def test_relative_and_package_imports_count(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from . import b\nfrom .c import thing\nimport os\n")
    (pkg / "b.py").write_text("from mypkg import d\n")
    (pkg / "c.py").write_text("thing = 1\n")
    (pkg / "d.py").write_text("x = 1\n")
    (pkg / "e.py").write_text("x = 2\n")
    assert [p.name for p in sources.source_files(pkg / "a.py")] == ["a.py", "b.py", "c.py", "d.py"]


def test_the_repository_digests_every_engine_file_a_method_trains_with():
    cls = registry.entry("advae").cls
    files, project = sources.files_for(Path(inspect.getsourcefile(cls)), cls.__module__)
    rel = {f.relative_to(REPO_ROOT).as_posix() for f in files}
    assert "methods/advae/gradients.py" in rel and "engine/stacked.py" in rel
    assert "bench" in project and not any(r.startswith("bench/") for r in rel)


def test_run_key_includes_the_digest(monkeypatch):
    exp = Experiment(name="t", protocol="paper", seeds=(0,), threshold="kde", alpha=0.1,
                     datasets=("letter",), methods=("ae", "pca"))
    keys = {r.spec: r.key for r in plan.expand(exp)}
    real = sources.method_digest
    ae_cls = registry.entry("ae").cls
    monkeypatch.setattr(plan, "method_digest", lambda cls: "edited" if cls is ae_cls else real(cls))
    edited = {r.spec: r.key for r in plan.expand(exp)}
    assert edited["ae"] != keys["ae"] and edited["pca"] == keys["pca"]
    assert inspect.getsourcefile(ae_cls).endswith("ae.py")
