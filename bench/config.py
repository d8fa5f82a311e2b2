"""Experiment configs: TOML files in ``configs/``.

    protocol = "paper"                 # or "resample"
    seeds = [0, 1, 2, 3, 4]
    threshold = "kde"                  # threshold policy (bench.thresholds)
    alpha = 0.1
    datasets = ["letter", "cardio"]    # catalogue names, or files of your own ("data/mine.csv")
    label_col = "target"               # label column of own .csv files (default: y or label)
    methods = ["advae", "ocsvm[nu=0.05]", "pyod:COPOD"]   # spec strings

    [[override]]                       # per-dataset parameter values (optional, repeatable)
    methods = ["advae", "vae"]
    datasets = ["letter"]
    params = { lambda_ = 0.003 }

Precedence of a parameter: method default < override < value written in the spec string.

``base = "paper.toml"`` (a path relative to the config's folder) starts from another config: every key
written here replaces the base's, and the base's ``[[override]]`` blocks come first, this file's after
(so a later block wins for the same parameter).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import BenchError, data, registry
from bench.params import MAX_SEED
from bench.protocols import PROTOCOLS
from bench.thresholds import POLICIES

#: At most this many seeds per invocation (a typo such as 0-99999 would otherwise queue 10^5 runs).
MAX_SEEDS = 1000

_KEYS = {"base", "name", "description", "protocol", "seeds", "threshold", "alpha", "datasets", "methods",
         "override", "label_col"}


@dataclass(frozen=True)
class Override:
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    params: dict


@dataclass(frozen=True)
class Experiment:
    name: str
    protocol: str
    seeds: tuple[int, ...]
    threshold: str
    alpha: float
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    overrides: tuple[Override, ...] = field(default=())
    path: str = ""
    label_col: str | None = None  # label column of own .csv datasets (None: y or label)

    @property
    def dataset_names(self) -> tuple[str, ...]:
        """The datasets as results name them (an own file by its stem)."""
        return tuple(data.name_of(d) for d in self.datasets)

    def params_for(self, method: str, dataset: str) -> dict:
        out: dict = {}
        for ov in self.overrides:
            if method in ov.methods and dataset in ov.datasets:
                out.update(ov.params)
        return out

    def restrict(self, methods=None, datasets=None, seeds=None, protocol=None,
                 label_col=None) -> "Experiment":
        exp = replace(self,
                      methods=tuple(methods) if methods is not None else self.methods,
                      datasets=tuple(datasets) if datasets is not None else self.datasets,
                      seeds=_unique(seeds) if seeds is not None else self.seeds,
                      protocol=protocol or self.protocol,
                      label_col=label_col if label_col is not None else self.label_col)
        exp.validate()
        return exp

    def validate(self) -> None:
        where = f"config {self.path or self.name}"
        if self.protocol not in PROTOCOLS:
            raise BenchError(f"{where}: unknown protocol {self.protocol!r}; choose one of "
                             f"{', '.join(PROTOCOLS)}")
        if self.threshold not in POLICIES:
            raise BenchError(f"{where}: unknown threshold policy {self.threshold!r}; choose one of "
                             f"{', '.join(POLICIES)}")
        if not 0 < self.alpha < 1:
            raise BenchError(f"{where}: alpha must be in (0, 1), got {self.alpha}")
        if not self.seeds or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                                     for s in self.seeds):
            raise BenchError(f"{where}: seeds must be a non-empty list of integers from 0 to {MAX_SEED}")
        if len(self.seeds) > MAX_SEEDS:
            raise BenchError(f"{where}: {len(self.seeds)} seeds; run at most {MAX_SEEDS} per invocation")
        if not self.methods or not self.datasets:
            raise BenchError(f"{where}: needs at least one method and one dataset")
        for d in self.datasets:
            data.check_ref(d)  # unknown dataset or missing file -> BenchError with suggestions
        names = self.dataset_names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise BenchError(f"{where}: two datasets are named {twice[0]!r} (an own file is named by its stem); "
                             "rename one")
        own = [d for d in self.datasets if data.is_own(d)]
        if own and self.protocol == "paper":
            raise BenchError(f"{where}: the paper protocol is the authors' fixed split of the five catalogued "
                             f"datasets; {own[0]} has none. Use --protocol resample (the default for your "
                             "own data)")
        if self.label_col is not None and not any(d.lower().endswith(".csv") for d in self.datasets):
            raise BenchError(f"{where}: a label column ({self.label_col!r}) is given but no dataset is a .csv "
                             "file")
        for spec in self.methods:
            registry.entry(registry.parse_spec(spec)[0])  # unknown method -> BenchError
        for ov in self.overrides:
            for d in ov.datasets:
                if d not in names:
                    data.info(d)  # an override may name a catalogued dataset this run leaves out


def default_protocol(datasets) -> str:
    """``paper`` for the catalogued datasets; ``resample`` as soon as one is a file of the user's own (the
    paper protocol is defined for the catalogue only)."""
    datasets = [datasets] if isinstance(datasets, str) else datasets if isinstance(datasets, list) else []
    return "resample" if any(data.is_own(str(d)) for d in datasets) else "paper"


def _unique(seeds) -> tuple:
    """Seeds in order, a repeated one counted once."""
    return tuple(dict.fromkeys(seeds))


def _as_list(value, what: str, where: str) -> list:
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, list):
        raise BenchError(f"{where}: {what} must be a list")
    return value


def _read(path: Path, seen: tuple = ()) -> dict:
    """The config's keys with its ``base`` chain merged in (the base's overrides first)."""
    if not path.is_file():
        where = f" (base of {seen[-1]})" if seen else ""
        raise BenchError(f"config file {str(path)!r} not found{where} (configs live in configs/*.toml)")
    if path.resolve() in seen:
        raise BenchError(f"config {path}: base chain loops back to itself")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"config {path}: not valid TOML ({exc})") from exc
    unknown = set(raw) - _KEYS
    if unknown:
        raise BenchError(f"config {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                         f"allowed: {', '.join(sorted(_KEYS))}")
    if "base" not in raw:
        return raw
    if not isinstance(raw["base"], str):
        raise BenchError(f"config {path}: base must be a file name, e.g. \"paper.toml\"")
    merged = {k: v for k, v in _read(path.parent / raw["base"], (*seen, path.resolve())).items()
              if k not in ("name", "base")}  # the name is this file's, not the base's
    own = {k: v for k, v in raw.items() if k != "base"}
    overrides = [*merged.get("override", []), *own.get("override", [])]
    merged.update(own)
    if overrides:
        merged["override"] = overrides
    return merged


def load(path: str | Path) -> Experiment:
    path = Path(path)
    raw = _read(path)
    where = f"config {path}"
    overrides = []
    for i, ov in enumerate(raw.get("override", [])):
        if not isinstance(ov, dict) or set(ov) - {"methods", "datasets", "params"} or \
                not isinstance(ov.get("params"), dict):
            raise BenchError(f"{where}: override #{i + 1} needs methods, datasets and a params table")
        overrides.append(Override(tuple(_as_list(ov.get("methods", []), "override methods", where)),
                                  tuple(_as_list(ov.get("datasets", []), "override datasets", where)),
                                  dict(ov["params"])))
    try:
        exp = Experiment(
            name=str(raw.get("name", path.stem)),
            protocol=str(raw.get("protocol", default_protocol(raw.get("datasets")))),
            seeds=_unique(_as_list(raw.get("seeds", [0]), "seeds", where)),
            threshold=str(raw.get("threshold", "kde")),
            alpha=float(raw.get("alpha", 0.1)),
            datasets=tuple(_as_list(raw.get("datasets", list(data.catalogue())), "datasets", where)),
            methods=tuple(_as_list(raw.get("methods", []), "methods", where)),
            overrides=tuple(overrides),
            path=str(path),
            label_col=None if raw.get("label_col") is None else str(raw["label_col"]),
        )
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: {exc}") from exc
    exp.validate()
    return exp
