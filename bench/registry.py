"""Method registry and the spec grammar ``name[param=value,...]``.

A method is found by name (lowercase kebab). Three sources, none of which needs this file edited:
- every module of the ``methods`` package registers its classes with ``@register("name")``;
- any PyOD detector is available as ``pyod:ClassName[...]``;
- third-party packages expose classes (or modules that call ``register``) in the Python entry-point
  group ``advae_bench.methods``;
- a single Python file anywhere, loaded with ``--plugin path/to/file.py`` (``load_plugin``), that
  calls ``register`` itself. Loaded plugins are listed in ``$ADVAE_BENCH_PLUGINS`` so that worker
  processes, which start afresh, load them too.

Spec values are parsed as TOML scalars: ``1``, ``1e-3``, ``true``, ``"text"``; anything that is not a
valid TOML value is taken as a bare string (``kernel=rbf``).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from bench import BenchError
from bench.base import Detector

ENTRY_POINT_GROUP = "advae_bench.methods"
PLUGIN_ENV = "ADVAE_BENCH_PLUGINS"  # os.pathsep-separated plugin files, loaded by every process
_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_SPEC_RE = re.compile(r"^\s*(?P<name>[A-Za-z0-9_:.\-]+)\s*(\[(?P<params>.*)\])?\s*$", re.S)


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type
    defaults: dict = field(default_factory=dict)  # parameter values this name fixes (variants)
    description: str = ""


@dataclass(frozen=True)
class Command:
    """A CLI subcommand that a definition module contributes (e.g. adVAE's ``reference`` and ``perf``,
    methods/advae_tools.py): ``add_arguments(parser)`` declares its flags, ``run(args) -> exit status``
    does the work and raises BenchError for bad input."""

    name: str
    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]


_REGISTRY: dict[str, MethodEntry] = {}
_COMMANDS: dict[str, Command] = {}
_BROKEN: dict[str, str] = {}  # method module -> why it could not be imported
_loaded = False


def register(name: str, defaults: dict | None = None, description: str | None = None):
    """Class decorator: ``@register("ocsvm")``. Stack several for variants with fixed ``defaults``."""
    if not _NAME_RE.match(name):
        raise ValueError(f"method name {name!r} must be lowercase kebab-case")

    def deco(cls):
        desc = description if description is not None else (cls.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = MethodEntry(name, cls, dict(defaults or {}), desc)
        return cls

    return deco


def register_command(name: str, help: str, add_arguments: Callable[[Any], None],
                     run: Callable[[Any], int]) -> None:
    """Add a ``python run_bench.py <name>`` subcommand from a definition module (plumbing reaches the
    definitions' tools through here instead of importing them)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"command name {name!r} must be lowercase kebab-case")
    _COMMANDS[name] = Command(name, help, add_arguments, run)


def commands() -> dict[str, Command]:
    """Every subcommand the definition modules registered, by name."""
    _load_all()
    return dict(_COMMANDS)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import methods

    # A module that fails to import must not take the other methods down; its error is shown
    # when a method name is not found.
    for mod in pkgutil.iter_modules(methods.__path__):
        if not mod.name.startswith("_"):
            try:
                importlib.import_module(f"methods.{mod.name}")
            except Exception as exc:  # noqa: BLE001
                _BROKEN[f"methods.{mod.name}"] = f"{type(exc).__name__}: {exc}"
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001
            _BROKEN[f"entry point {ep.name}"] = f"{type(exc).__name__}: {exc}"
            continue
        if isinstance(obj, type) and ep.name not in _REGISTRY:
            register(ep.name)(obj)
    for path in filter(None, os.environ.get(PLUGIN_ENV, "").split(os.pathsep)):
        try:
            _import_plugin(path)
        except BenchError as exc:
            _BROKEN[f"plugin {path}"] = str(exc)


_PLUGINS: dict[str, list[str]] = {}  # resolved path -> names it registered


def _import_plugin(path: str) -> list[str]:
    from pathlib import Path

    file = Path(path).expanduser().resolve()
    if str(file) in _PLUGINS:
        return _PLUGINS[str(file)]
    if not file.is_file():
        raise BenchError(f"--plugin {path}: no such file")
    if file.suffix != ".py":
        raise BenchError(f"--plugin {path}: expected a Python file (.py)")
    before = set(_REGISTRY)
    mod_name = "advae_bench_plugin_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[mod_name] = module  # so pickling and dataclasses can find it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: one line that names it
        sys.modules.pop(mod_name, None)
        raise BenchError(f"--plugin {path} failed to import: {type(exc).__name__}: {exc}") from None
    added = sorted(set(_REGISTRY) - before)
    if not added:
        raise BenchError(f"--plugin {path} registered no method; decorate its Detector subclass "
                         "with @register(\"my-method\") (from bench.registry import register)")
    _PLUGINS[str(file)] = added
    return added


def load_plugin(path: str) -> list[str]:
    """Import a single-file method definition and return the method names it registered. The file
    is remembered in ``$ADVAE_BENCH_PLUGINS`` for the worker processes the runner starts."""
    _load_all()
    added = _import_plugin(path)
    from pathlib import Path

    file = str(Path(path).expanduser().resolve())
    known = [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
    if file not in known:
        os.environ[PLUGIN_ENV] = os.pathsep.join([*known, file])
    return added


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def entry(name: str) -> MethodEntry:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        broken = "".join(f" [{m} failed to import: {why}]" for m, why in _BROKEN.items())
        raise BenchError(f"unknown method {name!r}.{hint} (`python run_bench.py list` shows all)"
                         f"{broken}")
    return _REGISTRY[name]


def _parse_value(text: str) -> Any:
    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if not text or any(c in text for c in "[]=,\"'"):
            raise BenchError(f"malformed parameter value {text!r}")
        return text


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"ocsvm[nu=0.1,kernel=rbf]"`` -> ``("ocsvm", {"nu": 0.1, "kernel": "rbf"})``."""
    m = _SPEC_RE.match(spec)
    if not m:
        raise BenchError(f"malformed method spec {spec!r}; expected name[param=value,...]")
    params: dict[str, Any] = {}
    body = m.group("params")
    if body is not None and body.strip():
        for part in body.split(","):
            if "=" not in part:
                raise BenchError(f"malformed method spec {spec!r}: {part.strip()!r} is not param=value")
            key, value = part.split("=", 1)
            key = key.strip()
            if not key.isidentifier():
                raise BenchError(f"malformed method spec {spec!r}: bad parameter name {key!r}")
            params[key] = _parse_value(value)
    return m.group("name"), params


def format_spec(name: str, params: dict) -> str:
    """Canonical spec string (sorted parameters), the inverse of ``parse_spec``."""
    if not params:
        return name
    parts = []
    for k in sorted(params):
        v = params[k]
        parts.append(f"{k}={v}" if isinstance(v, str) and re.fullmatch(r"[A-Za-z_][\w.\-]*", v)
                     else f"{k}={json.dumps(v)}")
    return f"{name}[{','.join(parts)}]"


def _pyod_class(cls_name: str) -> type:
    import pyod.models as pm

    for mod in pkgutil.iter_modules(pm.__path__):
        if mod.name.startswith(("_", "pyg_", "ts_")):
            continue
        try:
            module = importlib.import_module(f"pyod.models.{mod.name}")
        except Exception:  # optional dependencies of some PyOD models
            continue
        obj = getattr(module, cls_name, None)
        if isinstance(obj, type):
            return obj
    raise BenchError(f"PyOD has no detector class {cls_name!r} (spec pyod:{cls_name})")


def build(spec: str, overrides: dict | None = None) -> tuple[Detector, str, dict]:
    """Instantiate a spec. Parameter precedence: class defaults < variant defaults < ``overrides``
    (per-dataset config) < the spec's own values. Returns (detector, method name, resolved params)."""
    name, spec_params = parse_spec(spec)
    overrides = dict(overrides or {})
    if name.startswith("pyod:"):
        from methods.classical import PyODDetector

        pyod_cls = _pyod_class(name.split(":", 1)[1])
        det = PyODDetector(detector=pyod_cls.__name__, params={**overrides, **spec_params})
        det._check_params()
        return det, name, det.get_params()
    ent = entry(name)
    params = {**ent.defaults, **overrides, **spec_params}
    valid = ent.cls().get_params()
    unknown = [k for k in {**ent.defaults, **spec_params} if k not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(valid), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Valid: {', '.join(sorted(valid))}"
        raise BenchError(f"method {name!r} has no parameter {unknown[0]!r}.{hint}")
    # Per-dataset overrides may name parameters a method lacks only if the config says which
    # methods they apply to; there it is an error too.
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise BenchError(f"config override {unknown[0]!r} is not a parameter of method {name!r}")
    det = ent.cls(**params)
    return det, name, det.get_params(deep=False)
