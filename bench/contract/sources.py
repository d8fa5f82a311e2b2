"""The code a method trains with, as a digest for the run key (as benchopt keys a solver by its file).

Which files: the file that defines the method's class; the whole folder when that file sits in a
method's own subpackage (``methods/advae/``: the model and its registered accelerators); and every
file of the project that these import, transitively (``from engine.stacked import ...``,
``import engine.backbone``, relative imports), found by reading the import statements, not by running
them. The project is the folder that holds the plumbing package (this one); the plumbing itself is
never followed, so an edit to the runner or a report recomputes nothing. A method that lives outside
the project (a plugin file, an installed package) digests its own file, or its own package's files.

What of them: the digest follows what the code computes, not where it lives. Each file is read as
a syntax tree without docstrings, comments or layout; every import of a project module is written
as "a name from the project" (so moving a file, or renaming a package, is not an edit); the
statements of all the files are hashed as one sorted set (so moving a function from one file to
another is not an edit either). Any other change to a statement, a default, an expression or an
import from outside the project (``torch``, ``numpy``) is an edit and recomputes the runs.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
from pathlib import Path

PLUMBING = __name__.split(".")[0]
PROJECT_ROOT = Path(__file__).resolve().parents[len(__name__.split("."))  - 1]


def _packages(root: Path) -> set[str]:
    """Top-level packages (folders with an ``__init__.py``) directly under ``root``."""
    return {p.parent.name for p in root.glob("*/__init__.py")}


def _module_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules (and ``from m import x`` candidates ``m.x``) a tree imports."""
    names: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = here[:len(here) - node.level + 1] if node.level > 1 else here
                base = ".".join(parent + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _file_of(name: str, root: Path) -> Path | None:
    parts = name.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _module_of(path: Path, root: Path) -> tuple[str, bool]:
    rel = path.relative_to(root).with_suffix("")
    if rel.name == "__init__":
        return ".".join(rel.parent.parts), True
    return ".".join(rel.parts), False


def source_files(path: Path, root: Path | None = None, follow: set[str] | None = None) -> list[Path]:
    """The module at ``path`` and, transitively, the files of the packages ``follow`` it imports
    (default: the package the module is in), with ``root`` the folder that holds those packages
    (default: the parent of the module's package folder). Sorted."""
    path = Path(path).resolve()
    root = Path(root).resolve() if root else path.parent.parent
    follow = follow if follow is not None else {path.parent.name}
    seen, todo = set(), [path]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        module, is_package = _module_of(f, root)
        tree = ast.parse(f.read_bytes(), filename=str(f))
        for name in _module_names(tree, module, is_package):
            parts = name.split(".")
            if parts[0] in follow and len(parts) > 1:
                target = _file_of(name, root)
                if target is not None and target not in seen:
                    todo.append(target)
    return sorted(seen)


# ---- what the files compute --------------------------------------------------------------------------
def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                            and isinstance(s.value.value, str))]
            node.body = kept or [ast.Pass()]


def _canon(node, project: frozenset[str]) -> str:
    """A text for a syntax tree that is the same on every Python version this suite runs on (empty
    fields are left out, so fields that newer versions add with empty defaults do not count)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        module = getattr(node, "module", None) or ""
        local = bool(getattr(node, "level", 0)) or module.split(".")[0] in project
        if isinstance(node, ast.Import):
            names = [("<project>" if a.name.split(".")[0] in project else a.name, a.asname or "")
                     for a in node.names]
            return f"import{sorted(names)}"
        return f"from {'<project>' if local else module} import{sorted((a.name, a.asname or '') for a in node.names)}"
    if isinstance(node, ast.AST):
        fields = []
        for f in node._fields:
            v = getattr(node, f, None)
            if v is None or v == []:
                continue
            fields.append(f"{f}={_canon(v, project)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canon(x, project) for x in node) + "]"
    return repr(node)


def statements(path: Path, project: frozenset[str]) -> list[str]:
    """The top-level statements of a file as canonical texts (see the module docstring)."""
    tree = ast.parse(Path(path).read_bytes(), filename=str(path))
    _strip_docstrings(tree)
    return [_canon(s, project) for s in tree.body if not isinstance(s, ast.Pass)]


def digest_files(files: list[Path], project: set[str] | frozenset[str] = frozenset()) -> str:
    h = hashlib.sha256()
    for text in sorted(s for f in files for s in statements(f, frozenset(project))):
        h.update(text.encode() + b"\0")
    return h.hexdigest()[:16]


def files_for(path: Path, module: str) -> tuple[list[Path], set[str]]:
    """The files a class defined in ``module`` (at ``path``) is digested over, and the packages that
    count as the project's for its imports."""
    path = path.resolve()
    parts = module.split(".")
    if len(parts) == 1:  # a top-level module (a plugin file): its own file only
        return [path], set()
    top_dir = path.parents[len(parts) - 2]  # the folder of the module's top-level package
    root = top_dir.parent
    if root == PROJECT_ROOT:
        follow = _packages(root) - {PLUMBING}
    else:
        follow = {parts[0]}
    starts = [path]
    if len(parts) >= 3:  # methods/advae/model.py: the method's own folder, every file of it
        starts = sorted(p.resolve() for p in path.parent.glob("*.py"))
    files: set[Path] = set()
    for start in starts:
        files.update(source_files(start, root, follow))
    return sorted(files), follow | ({PLUMBING} if root == PROJECT_ROOT else set())


@functools.cache
def method_digest(cls: type) -> str:
    """Digest of the code a detector class trains with (see the module docstring); "" when the
    class has no source file (built in C, or defined interactively)."""
    try:
        path = Path(inspect.getsourcefile(cls) or "")
    except TypeError:
        return ""
    if not path.is_file():
        return ""
    files, project = files_for(path, cls.__module__)
    return digest_files(files, project)
