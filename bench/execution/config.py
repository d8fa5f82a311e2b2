"""Experiment configs: TOML files in ``configs/``.

    protocol = "paper"                 # or "resample"
    seeds = [0, 1, 2, 3, 4]
    threshold = "kde"                  # threshold policy (bench.evaluation.thresholds)
    alpha = 0.1
    datasets = ["letter", "cardio"]    # catalogue names, collections ("paper", "adbench") or own files
    label_col = "target"               # label column of own .csv files (default: y or label)
    contamination = [0, 0.01, 0.02]    # optional: contaminated training sets (protocol "+adasyn=")
    time_limit = 1800                  # optional: seconds a run may take (fit + scoring), else "timeout"
    compile = true                     # optional: compiled training steps for methods with a `compile`
                                       # parameter (a spec or override that sets it wins; not with --quick)
    featured = ["@advae"]              # optional: methods the curve figures draw strong (names, @families)
    baseline = "advae"                 # optional: the leaderboard's default baseline
    methods = ["@backbone", "mo-gaal", "ocsvm[nu=0.05]", "pyod:COPOD"]   # spec strings and @families

    [families]                         # groups of methods, referenced as "@name" (optional)
    advae = ["advae", "e-advae", "g-advae"]
    backbone = ["@advae", "ae", "vae", "gan", "wgan-gp", "dagmm"]

    [per_dataset."@backbone"]          # a parameter per dataset, written once (optional)
    latent_dim = { letter = 11, cardio = 7, satellite = 12, optdigits = 16, pendigits = 5 }
    [per_dataset.vae]                  # a key is a family ("@name") or a method name
    lambda_ = { letter = 0.003, cardio = 0.1 }

    [[override]]                       # per-dataset parameter values (optional, repeatable)
    methods = ["advae", "vae"]
    datasets = ["letter"]
    params = { lambda_ = 0.003 }

    [[sweep]]                          # one parameter over values (optional, repeatable)
    methods = ["advae"]
    param = "m_x"
    values = [0.5, 1.0, 1.5, 2.0, 2.5]

(TOML puts every key written below a ``[table]`` header into that table: the top-level keys come first.)

Precedence of a parameter: method default < per_dataset < override < value written in the spec string.

Families: ``[families]`` maps a lowercase kebab name to method specs and other families (``"@advae"``,
expanded in place). ``"@name"`` stands for the family's methods wherever methods are listed: in
``methods``, ``[[sweep]] methods``, ``[[override]] methods`` and as a ``per_dataset`` key (also on the
command line, ``--methods @advae,lof``). Expansion keeps the order written and drops a repeated spec
(its first place wins). Where methods are matched by name (override, per_dataset), a member written
with parameters counts by its method name (``gan[score=anogan]`` -> ``gan``). A family that includes
itself (directly or not) or an unknown family is an error naming the file and the family.

``per_dataset``: ``[per_dataset.KEY] param = { dataset = value, ... }`` is exactly one
``[[override]]`` per (KEY, param, dataset), in the order written, placed before the file's own
``[[override]]`` blocks (so those win over it). A dataset name there is checked as an override's is.

A sweep adds one spec per value, ``advae[m_x=0.5]`` ..., to ``methods`` (after the listed ones); the
swept value is written in the spec, so it wins over an override of the same parameter, and every other
parameter still takes its per-dataset override ("m_x over five values, the rest at Table 2"). On the
command line: ``--sweep "advae:m_x=0.5,1,1.5"`` (``a+b:param=v1,v2`` for several methods).

``contamination`` runs the protocol once per rate r as ``<protocol>+adasyn=<r>`` (bench.evaluation.protocols:
synthetic anomalies from held-out anomalies, r of the training rows).

``base = "paper.toml"`` (a path relative to the config's folder) starts from another config: every key
written here replaces the base's, and the base's ``[[override]]`` blocks (its per_dataset ones
included) come first, this file's after (so a later block wins for the same parameter). Families are
merged by name (this file's replace the base's of the same name) and resolved after the whole chain is
read: a config that redefines ``backbone`` changes what the base's ``@backbone`` covers, in its
methods and its per_dataset values alike. ``configs/paper.toml`` is the worked example: adding a deep
method to its ``backbone`` family (one line) runs it with the per-dataset latent sizes.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import BenchError
from bench.contract import registry
from bench.contract.params import MAX_SEED
from bench.evaluation import data
from bench.evaluation.protocols import parse_protocol, protocol_name
from bench.evaluation.thresholds import POLICIES
from bench.execution.schema import (MAX_SEEDS, SCHEMA, OVERRIDE_SCHEMA, SWEEP_SCHEMA, FAMILY_MEMBERS,
                                    PER_DATASET_PARAMS, PER_DATASET_VALUES, _FAMILY, _METHOD, check_schema,
                                    resolve_families, expand_families)

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
    families: dict = field(default_factory=dict)  # family name -> its method specs, @families expanded
    featured: tuple[str, ...] = field(default=())  # method names the curve figures draw strong
    baseline: str | None = None  # the leaderboard's default baseline spec
    compile: bool = False  # compile= of every method that has the parameter (unless a spec/override says)

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
                 contamination=None, label_col=None, time_limit=None, compile=None) -> "Experiment":
        """The experiment with command-line choices applied. Sweeps given here replace the config's
        and add their specs to ``methods`` (to the config's methods unless ``methods`` is given)."""
        base_methods = (tuple(expand_families(methods, self.families, "--methods")) if methods is not None
                        else self.methods)
        if sweeps:
            sweeps = [replace(sw, methods=tuple(expand_families(sw.methods, self.families, "--sweep")))
                      for sw in sweeps]
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
                      time_limit=time_limit if time_limit is not None else self.time_limit,
                      compile=compile if compile is not None else self.compile)
        exp.validate(datasets_given=datasets is not None)
        return exp

    def validate(self, datasets_given: bool = False) -> None:
        """BenchError for what cannot run; ``datasets_given``: the datasets came from --datasets, so
        errors about them name that flag, not the config."""
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
            both = [d for d in self.datasets if data.name_of(d) == twice[0]]
            raise BenchError(f"{'--datasets' if datasets_given else where}: two datasets are named "
                             f"{twice[0]!r} ({' and '.join(both)}; an own file is named by its stem); "
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


def _listed(value) -> list:
    """A key that takes one value or a list of them (SCHEMA allows both), as a list."""
    return value if isinstance(value, list) else [value]


def _read(path: Path, seen: tuple = ()) -> dict:
    """The config's keys with its ``base`` chain merged in (the base's overrides first)."""
    if not path.is_file():
        where = f" (base of {seen[-1]})" if seen else ""
        raise BenchError(f"config file {str(path)!r} not found{where} (configs live in configs/*.toml)")
    if path.resolve() in seen:
        raise BenchError(f"config {path}: base chain loops back to itself")
    raw = _parse(path)
    if "base" not in raw:
        return raw
    merged = {k: v for k, v in _read(path.parent / raw["base"], (*seen, path.resolve())).items()
              if k not in ("name", "base")}  # the name is this file's, not the base's
    own = {k: v for k, v in raw.items() if k != "base"}
    overrides = [*merged.get("override", []), *own.get("override", [])]
    families = {**merged.get("families", {}), **own.get("families", {})}  # this file's replace the base's
    origin = {key: {**merged.get(key, {}), **own.get(key, {})} for key in ("_origin", "_family_origin")}
    merged.update(own)
    merged.update(origin)
    if overrides:
        merged["override"] = overrides
    if families:
        merged["families"] = families
    return merged


def _parse(path: Path) -> dict:
    """One config file's keys, each checked against SCHEMA (and its blocks against theirs)."""
    where = f"config {path}"
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchError(f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                         f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise BenchError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{where}: not valid TOML ({exc})") from exc
    check_schema(where, SCHEMA, raw)
    for i, ov in enumerate(raw.get("override", [])):
        check_schema(f"{where}: override #{i + 1}", OVERRIDE_SCHEMA, ov, ("methods", "datasets", "params"))
    for i, sw in enumerate(raw.get("sweep", [])):
        check_schema(f"{where}: sweep #{i + 1}", SWEEP_SCHEMA, sw, ("methods", "param", "values"))
    families = raw.get("families", {})
    for name in families:
        if name in SCHEMA:
            raise BenchError(f"{where}: {name!r} is a config key, written under [families] (TOML puts a key "
                             "in the table above it: write the config's keys before the first [table])")
        if not _FAMILY.fullmatch(name):
            raise BenchError(f"{where}: family name {name!r} must be lowercase kebab case (a-z, 0-9 and '-', "
                             'e.g. "deep-baselines"); it is referenced as @name')
    check_schema(f"{where}: families", {name: FAMILY_MEMBERS for name in families}, families)
    # Where each key and block was written, for errors found once the base chain is merged.
    raw["_origin"] = {key: str(path) for key in raw}
    raw["_family_origin"] = {name: str(path) for name in families}
    for i, ov in enumerate(raw.get("override", [])):
        ov.update(_from=str(path), _what=f"override #{i + 1} methods")
    for i, sw in enumerate(raw.get("sweep", [])):
        sw.update(_from=str(path), _what=f"sweep #{i + 1} methods")
    if "per_dataset" in raw:  # one [[override]] per (key, parameter, dataset), before the file's own
        raw["override"] = [*_per_dataset(where, raw.pop("per_dataset"), str(path)), *raw.get("override", [])]
    return raw


def _per_dataset(where: str, table: dict, path: str) -> list[dict]:
    """``[per_dataset."@backbone"] latent_dim = { letter = 11, cardio = 7 }`` as the [[override]] blocks
    it stands for, in the order written: key, then parameter, then dataset."""
    for key in table:
        if not (key.startswith("@") and _FAMILY.fullmatch(key[1:])) and not _METHOD.fullmatch(key):
            raise BenchError(f'{where}: per_dataset key {key!r} must be a family ("@name") or a method name')
    check_schema(f"{where}: per_dataset", {key: PER_DATASET_PARAMS for key in table}, table)
    out = []
    for key, params in table.items():
        for param in params:
            if param in SCHEMA:
                raise BenchError(f'{where}: {param!r} is a config key, written under [per_dataset."{key}"] (TOML '
                                 "puts a key in the table above it: write the config's keys before the first "
                                 "[table])")
            if not param.isidentifier():
                raise BenchError(f'{where}: per_dataset."{key}": {param!r} is not a parameter name')
        check_schema(f'{where}: per_dataset."{key}"', {param: PER_DATASET_VALUES for param in params}, params)
        out += [{"methods": [key], "datasets": [dataset], "params": {param: value}, "_from": path,
                 "_what": f'per_dataset."{key}"'}
                for param, per in params.items() for dataset, value in per.items()]
    return out


def load(path: str | Path) -> Experiment:
    """The experiment a config file describes (its keys' types already checked against SCHEMA)."""
    path = Path(path)
    raw = _read(path)
    families = resolve_families(raw.get("families", {}), raw.get("_family_origin", {}))
    overrides = tuple(Override(tuple(expand_families(_listed(ov["methods"]), families, f"config {ov['_from']}",
                                                     ov["_what"], names=True)),
                               tuple(data.expand(_listed(ov["datasets"]))), dict(ov["params"]))
                      for ov in raw.get("override", []))
    sweeps = [Sweep(tuple(expand_families(_listed(sw["methods"]), families, f"config {sw['_from']}", sw["_what"])),
                    sw["param"], tuple(sw["values"]))
              for sw in raw.get("sweep", [])]
    listed = expand_families(_listed(raw.get("methods", [])), families,
                             f"config {raw['_origin'].get('methods', path)}", "methods")
    methods = list(dict.fromkeys([*listed, *(s for sw in sweeps for s in sw.specs())]))
    exp = Experiment(
        name=raw.get("name", path.stem),
        protocol=raw.get("protocol", default_protocol(raw.get("datasets"))),
        seeds=_unique(_listed(raw.get("seeds", [0]))),
        threshold=raw.get("threshold", "kde"),
        alpha=float(raw.get("alpha", 0.1)),
        datasets=tuple(data.expand(_listed(raw.get("datasets", data.default_datasets())))),
        methods=tuple(methods),
        overrides=overrides,
        path=str(path),
        sweeps=tuple(sweeps),
        contamination=tuple(float(r) for r in _listed(raw.get("contamination", []))),
        label_col=raw.get("label_col"),
        time_limit=raw.get("time_limit"),
        families=families,
        featured=tuple(expand_families(_listed(raw.get("featured", [])), families,
                                       f"config {raw['_origin'].get('featured', path)}", "featured", names=True)),
        baseline=raw.get("baseline"),
        compile=raw.get("compile", False),
    )
    exp.validate()
    return exp
