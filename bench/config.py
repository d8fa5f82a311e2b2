"""Experiment configs: TOML files in ``configs/``.

    protocol = "paper"                 # or "resample"
    seeds = [0, 1, 2, 3, 4]
    threshold = "kde"                  # threshold policy (bench.thresholds)
    alpha = 0.1
    datasets = ["letter", "cardio"]    # catalogue names, collections ("paper", "adbench") or own files
    label_col = "target"               # label column of own .csv files (default: y or label)
    methods = ["advae", "ocsvm[nu=0.05]", "pyod:COPOD"]   # spec strings

    [[override]]                       # per-dataset parameter values (optional, repeatable)
    methods = ["advae", "vae"]
    datasets = ["letter"]
    params = { lambda_ = 0.003 }

    [[sweep]]                          # one parameter over values (optional, repeatable)
    methods = ["advae"]
    param = "m_x"
    values = [0.5, 1.0, 1.5, 2.0, 2.5]

    contamination = [0, 0.01, 0.02]    # optional: contaminated training sets (protocol "+adasyn=")
    time_limit = 1800                  # optional: seconds a run may take (fit + scoring), else "timeout"

Precedence of a parameter: method default < override < value written in the spec string.

A sweep adds one spec per value, ``advae[m_x=0.5]`` ..., to ``methods`` (after the listed ones); the
swept value is written in the spec, so it wins over an override of the same parameter, and every other
parameter still takes its per-dataset override ("m_x over five values, the rest at Table 2"). On the
command line: ``--sweep "advae:m_x=0.5,1,1.5"`` (``a+b:param=v1,v2`` for several methods).

``contamination`` runs the protocol once per rate r as ``<protocol>+adasyn=<r>`` (bench.protocols:
synthetic anomalies from held-out anomalies, r of the training rows).

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
from bench.protocols import parse_protocol, protocol_name
from bench.thresholds import POLICIES

#: At most this many seeds per invocation (a typo such as 0-99999 would otherwise queue 10^5 runs).
MAX_SEEDS = 1000

_KEYS = {"base", "name", "description", "protocol", "seeds", "threshold", "alpha", "datasets", "methods",
         "override", "sweep", "contamination", "label_col", "time_limit"}


@dataclass(frozen=True)
class Override:
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    params: dict


@dataclass(frozen=True)
class Sweep:
    methods: tuple[str, ...]  # spec strings the values are written into
    param: str
    values: tuple

    def specs(self) -> list[str]:
        out = []
        for spec in self.methods:
            name, params = registry.parse_spec(spec)
            out += [registry.format_spec(name, {**params, self.param: v}) for v in self.values]
        return out


def parse_sweep(text: str) -> Sweep:
    """The command line's short form ``advae:m_x=0.5,1,1.5`` (``advae+vae:lambda_=0.01,0.1``)."""
    head, colon, body = text.partition(":")
    param, eq, values = body.partition("=")
    parsed = [registry._parse_value(v) for v in values.split(",") if v.strip()] if eq else []
    if not colon or not head.strip() or not param.strip().isidentifier() or not parsed:
        raise BenchError(f"malformed sweep {text!r}; expected METHOD[+METHOD...]:PARAM=V1,V2,..., "
                         "e.g. advae:m_x=0.5,1,1.5")
    return Sweep(tuple(m.strip() for m in head.split("+")), param.strip(), tuple(parsed))


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
    sweeps: tuple[Sweep, ...] = field(default=())  # already expanded into ``methods``
    contamination: tuple[float, ...] = field(default=())

    @property
    def protocols(self) -> list[str]:
        """The protocol, or one contaminated variant of it per rate."""
        if not self.contamination:
            return [self.protocol]
        return [protocol_name(self.protocol, r) for r in self.contamination]
    label_col: str | None = None  # label column of own .csv datasets (None: y or label)
    time_limit: float | None = None  # seconds per run (fit + scoring); None: no limit

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

    def restrict(self, methods=None, datasets=None, seeds=None, protocol=None, sweeps=None,
                 contamination=None, label_col=None, time_limit=None) -> "Experiment":
        """The experiment with command-line choices applied. Sweeps given here replace the config's
        and add their specs to ``methods`` (to the config's methods unless ``methods`` is given)."""
        base_methods = tuple(methods) if methods is not None else self.methods
        if sweeps:
            old = {s for sw in self.sweeps for s in sw.specs()}
            keep = tuple(m for m in base_methods if m not in old) if methods is None else base_methods
            base_methods = tuple(dict.fromkeys([*keep, *(s for sw in sweeps for s in sw.specs())]))
        exp = replace(self,
                      methods=base_methods,
                      datasets=tuple(data.expand(datasets)) if datasets is not None else self.datasets,
                      seeds=_unique(seeds) if seeds is not None else self.seeds,
                      protocol=protocol or self.protocol,
                      sweeps=tuple(sweeps) if sweeps else self.sweeps,
                      contamination=tuple(contamination) if contamination is not None
                      else self.contamination,
                      label_col=label_col if label_col is not None else self.label_col,
                      time_limit=time_limit if time_limit is not None else self.time_limit)
        exp.validate()
        return exp

    def validate(self) -> None:
        where = f"config {self.path or self.name}"
        try:
            base, rate = parse_protocol(self.protocol)
            for r in self.contamination:
                parse_protocol(protocol_name(base, r))
        except BenchError as exc:
            raise BenchError(f"{where}: {exc}") from None
        if rate is not None and self.contamination:
            raise BenchError(f"{where}: protocol {self.protocol!r} already names a contamination "
                             "rate; give rates either there or in contamination, not both")
        if self.threshold not in POLICIES:
            raise BenchError(f"{where}: unknown threshold policy {self.threshold!r}; choose one of "
                             f"{', '.join(POLICIES)}")
        if self.time_limit is not None and not (isinstance(self.time_limit, (int, float))
                                                 and not isinstance(self.time_limit, bool)
                                                 and 0 < self.time_limit < 10**7):
            raise BenchError(f"{where}: time_limit must be a number of seconds > 0, got {self.time_limit!r}")
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
        if own and base == "paper":
            raise BenchError(f"{where}: the paper protocol is the authors' fixed split of the five catalogued "
                             f"datasets; {own[0]} has none. Use --protocol resample (the default for your "
                             "own data)")
        unsplit = [d for d in self.datasets if not data.is_own(d) and "paper_split" not in data.info(d)]
        if unsplit and base == "paper":
            raise BenchError(f"{where}: the paper protocol is the authors' fixed split of the paper's five "
                             f"datasets; {unsplit[0]} has none ({len(unsplit)} such). Use --protocol "
                             "adbench (ADBench's own split) or resample")
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
                                  tuple(data.expand(_as_list(ov.get("datasets", []), "override datasets",
                                                             where))),
                                  dict(ov["params"])))
    sweeps = []
    for i, sw in enumerate(raw.get("sweep", [])):
        if not isinstance(sw, dict) or set(sw) != {"methods", "param", "values"} or \
                not isinstance(sw.get("param"), str) or not isinstance(sw.get("values"), list) or \
                not sw["values"]:
            raise BenchError(f"{where}: sweep #{i + 1} needs methods, param (a name) and values (a "
                             "non-empty list), e.g. methods = [\"advae\"], param = \"m_x\", "
                             "values = [1.0, 2.0]")
        sweeps.append(Sweep(tuple(_as_list(sw["methods"], "sweep methods", where)), sw["param"],
                            tuple(sw["values"])))
    methods = list(_as_list(raw.get("methods", []), "methods", where))
    methods = list(dict.fromkeys([*methods, *(s for sw in sweeps for s in sw.specs())]))
    try:
        exp = Experiment(
            name=str(raw.get("name", path.stem)),
            protocol=str(raw.get("protocol", default_protocol(raw.get("datasets")))),
            seeds=_unique(_as_list(raw.get("seeds", [0]), "seeds", where)),
            threshold=str(raw.get("threshold", "kde")),
            alpha=float(raw.get("alpha", 0.1)),
            datasets=tuple(data.expand(_as_list(raw.get("datasets", data.default_datasets()),
                                                "datasets", where))),
            methods=tuple(methods),
            overrides=tuple(overrides),
            path=str(path),
            sweeps=tuple(sweeps),
            contamination=tuple(float(r) for r in _as_list(raw.get("contamination", []),
                                                            "contamination", where)),
            label_col=None if raw.get("label_col") is None else str(raw["label_col"]),
            time_limit=raw.get("time_limit"),
        )
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: {exc}") from exc
    exp.validate()
    return exp
