"""What an experiment runs: its runs and their keys (``expand``), the groups a method trains
together (``make_groups``), the tasks executors receive and their longest-first order by stored
timings or the cost model (``longest_first``), and the weights of the progress bar.

A run's key hashes the method name and version, the digest of the code it trains with
(bench/contract/sources.py), the resolved parameters, the dataset's checksum, the protocol, the seed and
the spec as written; grouping is not in the key (bench/execution/runner.py says why it need not be).
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.contract import registry
from bench.contract.sources import method_digest
from bench.evaluation import data
from bench.evaluation.protocols import SEED_FREE
from bench.execution.config import Experiment
from bench.execution.store import Store


@dataclass(frozen=True)
class Run:
    key: str
    spec: str  # canonical spec string as written in the config: the method's display name
    method: str  # registry name (or pyod:Class)
    params_json: str  # fully resolved constructor parameters
    dataset: str
    dataset_sha256: str
    protocol: str
    seed: int
    source: str = ""  # an own dataset's file (absolute path); "" = the catalogued dataset ``dataset``
    label_col: str | None = None  # an own CSV file's label column

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    def group_key(self) -> tuple:
        p = self.params
        p.pop("random_state", None)
        cls = _detector_class(self)
        free = tuple(getattr(cls, "member_params", ()) or ())
        if not free:
            return (self.method, self.spec, json.dumps(p, sort_keys=True), self.dataset, self.protocol)
        for name in free:
            p.pop(name, None)
        return (f"{cls.__module__}.{cls.__qualname__}", json.dumps(p, sort_keys=True), self.dataset,
                self.source, self.protocol)


def _jsonable(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=repr)


def expand(exp: Experiment, data_dir=None, quick: bool = False) -> list[Run]:
    """Every run of the experiment, in config order (dataset, then method, then seed)."""
    runs = []
    for dataset in exp.datasets:
        ds = data.load(dataset, data_dir, exp.label_col)  # fails fast on a missing or corrupt file
        source = str(Path(dataset).resolve()) if data.is_own(dataset) else ""
        for spec in exp.methods:
            name, spec_params = registry.parse_spec(spec)
            canonical = registry.format_spec(name, spec_params)
            extra = exp.params_for(name, ds.name)
            if quick and not name.startswith("pyod:"):
                extra = {**registry.entry(name).cls.quick_params, **extra}
            elif exp.compile and "compile" in _init_params(name):  # the config's switch; specs win
                extra = {"compile": True, **extra}
            det, name, params = registry.build(spec, extra)
            version = getattr(type(det), "version", "1")
            code = method_digest(type(det))  # the method's file and the files it imports
            for protocol, seed in itertools.product(exp.protocols, exp.seeds):
                p = dict(params)
                if "random_state" in p:
                    p["random_state"] = int(seed)
                pj = _jsonable(p)
                key = hashlib.sha256(json.dumps(
                    [name, version, code, pj, ds.identity, protocol, int(seed), canonical]
                ).encode()).hexdigest()[:24]
                runs.append(Run(key, canonical, name, pj, ds.name, ds.sha256, protocol, int(seed),
                                source, ds.info.get("label_col")))
    return runs


def _init_params(name: str) -> set[str]:
    """The constructor parameters of a registered method (none known: an empty set)."""
    try:
        return set(inspect.signature(registry.entry(name).cls.__init__).parameters)
    except (TypeError, ValueError, AttributeError):
        return set()


def check_datasets(runs: list[Run], store: Store) -> list[str]:
    """Before any work: BenchError when a dataset's name is one the store holds for other data (another
    file with the same stem: results are grouped by name, so they would mix), or two of the run's
    datasets are the same data. Returns a note for each file whose data the store holds under another
    name (its runs are that dataset's: the run key holds the data's checksum, not the file's name)."""
    mine: dict[str, tuple[str, str]] = {}
    for r in runs:
        mine.setdefault(r.dataset, (r.dataset_sha256, r.source))
    seen: dict[str, str] = {}
    for name, (sha, src) in mine.items():
        if sha in seen:
            raise BenchError(f"datasets {seen[sha]} and {src or name} are the same data (sha256 "
                             f"{sha[:12]}); list one of them")
        seen[sha] = src or name
    stored, notes = store.datasets(), []
    for name, (sha, src) in mine.items():
        other = {s: f for s, f in stored.get(name, {}).items() if s != sha}
        if other:
            old_sha, old_file = next(iter(other.items()))
            raise BenchError(f"dataset {src or name} is named {name!r}, but the store {store.path} holds runs "
                             f"of another file under that name ({old_file or 'its path was not recorded'}, "
                             f"sha256 {old_sha[:12]}; this one's is {sha[:12]}); rename one of the files "
                             "(results are grouped by dataset name) or choose another --out")
        for old_name, shas in stored.items():
            if old_name != name and sha in shas:
                notes.append(f"note: dataset {src or name} holds the same data as {old_name!r} in "
                             f"{store.path} ({shas[sha] or 'sha256 ' + sha[:12]}): it is the same dataset, "
                             f"so its runs are {old_name!r}'s and are shown under that name")
    return notes


def make_groups(runs: list[Run], slots: int = 1) -> list[list[Run]]:
    """The runs as groups for ``fit_group`` (see the module docstring); with ``slots`` > 1, a grid
    of fewer groups than slots has its largest groups halved until each slot has one."""
    buckets: dict[tuple, list[Run]] = {}
    for r in runs:
        buckets.setdefault(r.group_key(), []).append(r)
    groups = []
    for members in buckets.values():
        size = max(1, int(getattr(_detector_class(members[0]), "max_group_size", 1)))
        if _shares_fit(members[0]):
            size = len(members)  # deterministic method on a seed-free split: one fit serves all
        groups += split_evenly(members, size)
    return fill_slots(groups, slots)


def fill_slots(groups: list[list[Run]], slots: int) -> list[list[Run]]:
    """Halve the largest group (the first of equal ones; never one whose fit serves every seed) while
    there are fewer groups than ``slots``: the halves run at once on two workers, each member still
    exactly as it would train alone."""
    groups = list(groups)
    while len(groups) < slots:
        splittable = [i for i, g in enumerate(groups) if len(g) > 1 and not _shares_fit(g[0])]
        if not splittable:
            break
        i = max(splittable, key=lambda j: (len(groups[j]), -j))
        groups[i:i + 1] = split_evenly(groups[i], -(-len(groups[i]) // 2))
    return groups


def split_evenly(items: list, size: int) -> list[list]:
    """``items`` in order, as the fewest parts of at most ``size`` items, their sizes within one of
    each other (60 runs at 25: 20 + 20 + 20, not 25 + 25 + 10)."""
    parts = -(-len(items) // max(1, size))
    base, extra = divmod(len(items), max(1, parts))
    out, start = [], 0
    for i in range(parts):
        n = base + (i < extra)
        out.append(items[start:start + n])
        start += n
    return out


def _detector_class(run: Run) -> type:
    return registry.entry(run.method).cls


def _shares_fit(run: Run) -> bool:
    """A method without randomness on a protocol whose split ignores the seed gives the same scores
    for every seed: it is fitted once and the result is stored for each seed."""
    return ("random_state" not in run.params and run.protocol in SEED_FREE
            and not getattr(_detector_class(run), "member_params", ()))


def _instantiate(run: Run, cls: type | None = None):
    return (cls or _detector_class(run))(**run.params)


@dataclass
class Task:
    """One group of runs as an executor receives it: everything the group needs travels with it."""
    index: int  # position in the order of execution
    group: list[Run]
    dataset: data.Dataset  # the arrays (small), so a remote worker needs no shared file system
    cls: type | None = None  # the method's class, for workers without this registry (Dask)
    estimate: float | None = None  # expected seconds (stored timings or the calibrated cost model)
    units: float = 0.0  # cost model: declared ``cost`` x n_iter x (1 + d / COST_WIDTH) x fitted members
    meta: dict = field(default_factory=dict)


EXECUTIONS = "executions.jsonl"  # per-group timings, appended by the driver; read back for ordering only


def _signature(method, spec, params_json, dataset, protocol) -> str:
    p = json.loads(params_json) if isinstance(params_json, str) else dict(params_json or {})
    p.pop("random_state", None)
    return json.dumps([method, spec, json.dumps(p, sort_keys=True), dataset, protocol])


def stored_timings(store: Store, out_dir) -> dict[str, float]:
    """Seconds per run of each group signature (a group's runs without their seed) from earlier runs:
    the store's fit + score seconds of its ok runs, overridden by the newest wall time a group of that
    signature took in ``executions.jsonl``. Used to order groups, never for results."""
    known: dict[str, list[float]] = {}
    df = store.frame()
    for row in df[df.status == "ok"].itertuples():
        if row.fit_seconds is None or row.fit_seconds != row.fit_seconds:
            continue
        score = row.score_seconds if row.score_seconds == row.score_seconds and row.score_seconds else 0.0
        sig = _signature(row.method, row.spec, row.params, row.dataset, row.protocol)
        known.setdefault(sig, []).append(float(row.fit_seconds) + float(score))  # fit: per member
    timings = {sig: float(np.median(v)) for sig, v in known.items()}
    path = Path(out_dir) / EXECUTIONS
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
                timings[e["signature"]] = float(e["seconds"]) / max(1, int(e["runs"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line (the driver was killed mid-write): skip it
    return timings


#: Features at which a stacked network's per-iteration cost doubles over its fixed part (cost units).
COST_WIDTH = 50.0


def cost_units(group: list[Run], ds: data.Dataset) -> float:
    """The method's declared ``cost`` (per iteration, relative to AE) x ``n_iter`` x (1 + features /
    COST_WIDTH) x fitted members. Rows do not enter: the deep methods train on mini-batches, and their
    CPU per run on the paper's datasets follows the width, not the rows (AE, 20000 iterations: 2.7 s
    on pendigits, d = 16 and 6870 rows; 4.8 s on optdigits, d = 64 and 5216 rows; adVAE 8.4 and
    15.2 s). A method with ``n_iter`` that declares no cost is taken as AE-like (1); one with neither
    is 0 (the classical methods: quick, so they go last)."""
    n_iter = group[0].params.get("n_iter")
    cost = getattr(_detector_class(group[0]), "cost", None) or (1.0 if n_iter is not None else 0.0)
    if not cost:
        return 0.0
    n_iter = n_iter if isinstance(n_iter, (int, float)) and n_iter > 0 else 1
    fitted = 1 if _shares_fit(group[0]) else len(group)
    return float(cost) * float(n_iter) * (1.0 + ds.X.shape[1] / COST_WIDTH) * fitted


def longest_first(groups: list[list[Run]], datasets: dict, timings: dict[str, float]) -> list[Task]:
    """Tasks ordered longest first, so no long group starts last and keeps one core busy alone at the
    end. A group's length: its signature's stored seconds per run x its runs where known; else its
    cost units, converted to seconds by the median seconds per unit of the groups known both ways
    (without any such group, cost-model groups come before timed ones). Ties keep config order."""
    rows = []
    for i, g in enumerate(groups):
        ds = datasets[_data_ref(g[0])]
        sig = _signature(g[0].method, g[0].spec, g[0].params_json, g[0].dataset, g[0].protocol)
        known = timings.get(sig)
        rows.append((i, g, ds, known * len(g) if known is not None else None, cost_units(g, ds)))
    ratios = [sec / units for _, _, _, sec, units in rows if sec is not None and units > 0]
    scale = float(np.median(ratios)) if ratios else None

    def key(row):
        i, _, _, sec, units = row
        if sec is not None:
            return (0 if scale is not None else 1, -sec, i)
        if units > 0:
            return (0, -units * (scale if scale is not None else 1.0), i)
        return (2, 0.0, i)

    ordered = sorted(rows, key=key)
    tasks = []
    for n, (i, g, ds, sec, units) in enumerate(ordered):
        est = sec if sec is not None else (units * scale if scale is not None and units > 0 else None)
        tasks.append(Task(n, g, ds, estimate=est, units=units))
    return tasks


#: CPU seconds per cost unit before this store has timed a group of both kinds: AE, 20000 iterations,
#: cardio (d = 21, 2.84e4 units) took 3.1 s per run on this project's 2-core machines (the
#: contamination study, 5-seed stacks). Only the progress bar uses it.
DEFAULT_SECONDS_PER_UNIT = 1.2e-4


#: Seconds per run assumed for a group with neither a stored timing nor a cost (the classical methods).
DEFAULT_SECONDS_PER_RUN = 2.0


def progress_weights(tasks: list[Task]) -> dict[int, float]:
    """Each task's share of the work, in estimated seconds: its estimate (stored timings, or the cost
    model calibrated on them), else its cost units at DEFAULT_SECONDS_PER_UNIT, else
    DEFAULT_SECONDS_PER_RUN per run. The progress bar advances by these, so a grid that starts with
    its longest groups shows a time estimate from its first finished group, not from a count of runs."""
    out = {}
    for t in tasks:
        if t.estimate is not None and t.estimate > 0:
            out[t.index] = float(t.estimate)
        elif t.units > 0:
            out[t.index] = t.units * DEFAULT_SECONDS_PER_UNIT
        else:
            out[t.index] = DEFAULT_SECONDS_PER_RUN * len(t.group)
    return out


def _data_ref(run: Run) -> tuple:
    return (run.source or run.dataset, run.label_col)
