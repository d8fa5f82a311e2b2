"""Method registry and the spec grammar ``name[param=value,...]``.

A method is found by name (lowercase kebab). Three sources, none of which needs this file edited:
- every module of the definitions package ``methods`` registers its classes with ``@register("name")``;
- a definition module may claim a namespace with ``register_namespace``: a name ``prefix:Member`` is
  then resolved by its function (``methods/classical.py`` makes any PyOD detector ``pyod:ClassName``);
- third-party packages expose classes (or modules that call ``register``) in the Python entry-point
  group ``advae_bench.methods``;
- a single Python file anywhere, loaded with ``--plugin path/to/file.py`` (``load_plugin``), that
  calls ``register`` itself. Loaded plugins are listed in ``$ADVAE_BENCH_PLUGINS`` so that worker
  processes, which start afresh, load them too.

This module is plumbing: it never imports a definition by name. It loads the definitions package by
the string ``DEFINITIONS`` when a method is first asked for.

Spec values are parsed as TOML scalars: ``1``, ``1e-3``, ``true``, ``"text"``; anything that is not a
valid TOML value is taken as a bare string (``kernel=rbf``).
"""
from __future__ import annotations

import difflib
import functools
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
from bench.contract.base import Detector
from bench.contract.params import InvalidParameter

ENTRY_POINT_GROUP = "advae_bench.methods"
PLUGIN_ENV = "ADVAE_BENCH_PLUGINS"  # os.pathsep-separated plugin files, loaded by every process
DEFINITIONS = "methods"  # the package whose modules define the built-in methods
COMMANDS = "tools.commands"  # the package whose modules contribute CLI subcommands (perf, reference)
_NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_SPEC_RE = re.compile(r"^\s*(?P<name>[A-Za-z0-9_:.\-]+)\s*(\[(?P<params>.*)\])?\s*$", re.S)


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type
    defaults: dict = field(default_factory=dict)  # parameter values this name fixes (variants)
    description: str = ""
    #: For namespaced names: spec parameters -> detector, when the spec's parameters are not the
    #: class's constructor parameters (``pyod:KNN[n_neighbors=7]`` -> PyODDetector("KNN", {...})).
    make: Callable[[dict], Detector] | None = None


@dataclass(frozen=True)
class Command:
    """A CLI subcommand that a definition module contributes (e.g. ``reference`` and ``perf``,
    tools/commands/): ``add_arguments(parser)`` declares its flags, ``run(args) -> exit status``
    does the work and raises BenchError for bad input."""

    name: str
    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]


_REGISTRY: dict[str, MethodEntry] = {}
_CALLS: list[str] = []  # every name ``register`` was called with, in order (to find clashes)
_COMMANDS: dict[str, Command] = {}
_NAMESPACES: dict[str, Callable[[str], MethodEntry]] = {}
_BROKEN: dict[str, str] = {}  # method module -> why it could not be imported
_loaded = False


def register(name: str, defaults: dict | None = None, description: str | None = None):
    """Class decorator: ``@register("ocsvm")``. Stack several for variants with fixed ``defaults``."""
    if not _NAME_RE.match(name):
        raise ValueError(f"method name {name!r} must be lowercase kebab-case")

    def deco(cls):
        desc = description if description is not None else first_sentence(cls.__doc__)
        _CALLS.append(name)
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
    """Every subcommand registered, by name: by the modules of ``COMMANDS`` and by definition modules."""
    _load_all()
    try:
        package = importlib.import_module(COMMANDS)
    except ImportError:
        package = None  # installed without the tools: no extra subcommands
    for mod in pkgutil.iter_modules(package.__path__ if package else []):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{COMMANDS}.{mod.name}")
    return dict(_COMMANDS)
#: a full stop ends a sentence when a capital letter follows, unless it closes one of these
_ABBREVIATIONS = ("al", "e.g", "i.e", "cf", "vs", "etc", "Fig", "Eq", "Sec")
_SENTENCE_END = re.compile(r"\.(?=\s+[A-Z(])")


def first_sentence(doc: str | None) -> str:
    """The whole first sentence of a docstring (across line breaks; "et al." does not end it)."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    for m in _SENTENCE_END.finditer(text):
        if not text[:m.start()].endswith(_ABBREVIATIONS):
            return text[:m.end()]
    return text


def register_namespace(prefix: str, resolve: Callable[[str], MethodEntry]) -> None:
    """Let a definition module resolve every name ``prefix:Member``: ``resolve(member)`` returns its
    MethodEntry or raises BenchError saying why there is none."""
    if not re.fullmatch(r"[a-z][a-z0-9]*", prefix):
        raise ValueError(f"namespace {prefix!r} must be lowercase letters and digits")
    _NAMESPACES[prefix] = functools.cache(resolve)


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(DEFINITIONS)

    # A module that fails to import must not take the other methods down; its error is shown
    # when a method name is not found.
    for mod in pkgutil.iter_modules(package.__path__):
        if not mod.name.startswith("_"):
            try:
                importlib.import_module(f"{DEFINITIONS}.{mod.name}")
            except Exception as exc:  # noqa: BLE001
                _BROKEN[f"{DEFINITIONS}.{mod.name}"] = f"{type(exc).__name__}: {exc}"
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
    before, calls = dict(_REGISTRY), len(_CALLS)
    mod_name = "advae_bench_plugin_" + re.sub(r"\W", "_", file.stem)
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[mod_name] = module  # so pickling and dataclasses can find it
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's file: one line that names it
        sys.modules.pop(mod_name, None)
        _restore(before)
        why = (f"it called sys.exit({exc.code!r}) while being imported (a plugin file only defines "
               "and registers methods)" if isinstance(exc, SystemExit)
               else f"{type(exc).__name__}: {exc}")
        raise BenchError(f"--plugin {path} failed to import: {why}") from None
    _check_registered(path, before, _CALLS[calls:])
    added = sorted(set(_REGISTRY) - set(before))
    if not added:
        raise BenchError(f"--plugin {path} registered no method; decorate its Detector subclass "
                         "with @register(\"my-method\") (from bench.contract.registry import register)")
    _PLUGINS[str(file)] = added
    return added


def _restore(before: dict) -> None:
    """The registry as it was before a plugin that failed was imported."""
    _REGISTRY.clear()
    _REGISTRY.update(before)


def _check_registered(path: str, before: dict, called: list[str]) -> None:
    """BenchError (and the registry restored) when a plugin took a name another method holds, or
    registered something that is not a Detector subclass."""
    for name in called:
        old, new = before.get(name), _REGISTRY[name]
        if old is not None and old.cls is not new.cls:
            _restore(before)
            raise BenchError(f"--plugin {path} registers {name!r}, a name already taken by "
                             f"{old.cls.__module__}.{old.cls.__qualname__}; register it under another name")
        if not (isinstance(new.cls, type) and issubclass(new.cls, Detector)):
            _restore(before)
            what = new.cls.__qualname__ if hasattr(new.cls, "__qualname__") else repr(new.cls)
            raise BenchError(f"--plugin {path} registers {name!r} as {what}, which is not a Detector; "
                             "subclass bench.contract.base.Detector (fit, anomaly_score)")


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
    if ":" in name:
        prefix, member = name.split(":", 1)
        if prefix not in _NAMESPACES:
            known = ", ".join(f"{p}:" for p in sorted(_NAMESPACES)) or "none"
            broken = "".join(f" [{m} failed to import: {why}]" for m, why in _BROKEN.items())
            raise BenchError(f"unknown method namespace {prefix + ':'!r} in {name!r} (known: {known})"
                             f"{broken}")
        return _NAMESPACES[prefix](member)
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
            if key in params:
                raise BenchError(f"malformed method spec {spec!r}: parameter {key!r} is given twice; give it "
                                 "once")
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


def build(spec: str, overrides: dict | None = None) -> tuple[Detector, str, dict]:
    """Instantiate a spec. Parameter precedence: class defaults < variant defaults < ``overrides``
    (per-dataset config) < the spec's own values. Returns (detector, method name, resolved params)."""
    name, spec_params = parse_spec(spec)
    overrides = dict(overrides or {})
    ent = entry(name)
    if ent.make is not None:
        det = ent.make({**ent.defaults, **overrides, **spec_params})
        return det, name, det.get_params(deep=False)
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
    try:
        det.validate_params()
    except InvalidParameter as exc:
        from_config = exc.param in overrides and exc.param not in spec_params
        where = " (the value comes from a config override)" if from_config else ""
        raise BenchError(f"method spec {spec.strip()!r}: {exc.detail}{where}") from exc
    return det, name, det.get_params(deep=False)
