"""The code a method trains with, as a digest for the run key (as benchopt keys a solver by its file).

A method's digest hashes the file that defines its class and every file of the same package that it
imports, transitively (``from methods.stacked import ...``, ``import methods.backbone``, relative
imports), found by reading the import statements, not by running them. So an edit to adVAE's file or
to the backbone it trains with recomputes adVAE's runs, and an edit to another method's file, to a
test or to the plumbing (bench/) does not.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import sys
from pathlib import Path


def _imported_files(path: Path, package: str, package_dir: Path) -> set[Path]:
    """Files of ``package`` (a directory of modules) that the module at ``path`` imports."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y, inside the package
                base = ".".join([package, node.module] if node.module else [package])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # from methods import backbone
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != package or len(parts) < 2:
            continue
        for candidate in (package_dir.joinpath(*parts[1:]).with_suffix(".py"),
                          package_dir.joinpath(*parts[1:], "__init__.py")):
            if candidate.is_file():
                out.add(candidate.resolve())
    return out


def source_files(path: Path, package: str | None = None) -> list[Path]:
    """The module at ``path`` and the files of its package it imports, transitively, sorted."""
    path = Path(path).resolve()
    package_dir = path.parent
    package = package or package_dir.name
    seen, todo = set(), [path]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_imported_files(f, package, package_dir) - seen)
    return sorted(seen)


def digest_files(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def method_digest(cls: type) -> str:
    """Digest of the source a detector class trains with (see the module docstring); "" when the
    class has no source file (built in C, or defined interactively)."""
    try:
        path = Path(inspect.getsourcefile(cls) or "")
    except TypeError:
        return ""
    if not path.is_file():
        return ""
    module = sys.modules.get(cls.__module__)
    package = cls.__module__.rsplit(".", 1)[0] if "." in cls.__module__ else None
    if module is not None and package is None:  # a top-level module: its own file only
        return digest_files([path.resolve()], path.resolve().parent)
    files = source_files(path, package.split(".")[-1] if package else None)
    return digest_files(files, path.resolve().parent.parent)
