"""A store read as a table: one row per run with its record and metrics (``load_runs``), thresholds
recomputed under another policy, the context line every table and figure carries (protocol, threshold
policy, seeds), and the order methods and datasets are shown in (``order.json``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError
from bench.contract import registry
from bench.evaluation.metrics import evaluate
from bench.evaluation.thresholds import PAPER_POLICY, threshold as compute_threshold
from bench.execution.store import Store


CSV_COLUMNS = ["method", "spec", "dataset", "protocol", "seed", "status", "flags", "auc", "ap",
               "precision", "recall", "f1", "threshold_policy", "alpha", "threshold",
               "threshold_extreme",
               "fit_seconds", "score_seconds", "group_size", "device", "error", "params",
               "dataset_sha256", "git_commit", "created_at", "key"]


def threshold_family(method: str) -> str:
    """The method's ``threshold_family`` (what the ``paper`` policy gives it), from the registry."""
    if method.startswith("pyod:"):
        return "pyod"  # PyOD's own detectors: PyOD's rule
    try:
        return getattr(registry.entry(method).cls, "threshold_family", "pyod")
    except BenchError:
        raise BenchError(f"method {method!r} of the store is not registered, so the paper threshold "
                         "policy cannot tell its family; load its file with --plugin FILE") from None


def _rethreshold(df: pd.DataFrame, policy: str | None, alpha: float | None) -> pd.DataFrame:
    if policy is None and alpha is None:
        return df
    df = df.copy()
    families: dict[str, str] = {}
    for i, row in df[df.status == "ok"].iterrows():
        pol = policy or row.threshold_policy
        a = alpha if alpha is not None else row.alpha
        if pol == row.threshold_policy and float(a) == float(row.alpha):
            continue  # stored under exactly this policy and alpha
        if pol == PAPER_POLICY and row.method not in families:
            families[row.method] = threshold_family(row.method)
        thr = compute_threshold(pol, row.train_scores, a, families.get(row.method))
        m = evaluate(row.y_test, row.test_scores, thr)
        df.loc[i, ["threshold_policy", "alpha", "threshold", *m]] = [pol, a, thr, *m.values()]
    return df


def _threshold_extremes(df: pd.DataFrame) -> pd.Series:
    """Per run: "none" when its threshold flags no test row (score >= threshold), "all" when it
    flags every test row, "" otherwise (and for runs that are not ok)."""
    def one(row):
        if row.status != "ok" or row.test_scores is None or not np.isfinite(row.threshold):
            return ""
        n = int((np.asarray(row.test_scores) >= row.threshold).sum())
        return "none" if n == 0 else "all" if n == len(row.test_scores) else ""
    return pd.Series([one(r) for r in df.itertuples()], index=df.index, dtype=object)


def load_runs(out_dir, policy: str | None = None, alpha: float | None = None,
              with_blobs: bool = True) -> pd.DataFrame:
    """The newest run per (spec, dataset, protocol, seed) of the store in ``out_dir``, with the
    threshold metrics recomputed under ``policy``/``alpha`` when given, and ``threshold_extreme``."""
    out_dir = Path(out_dir)
    if not (out_dir / "runs.sqlite").is_file():
        raise BenchError(f"no result store in {out_dir} (expected {out_dir / 'runs.sqlite'}); "
                         "run an experiment there first")
    store = Store(out_dir)
    try:
        df = store.latest(with_blobs=with_blobs or policy is not None or alpha is not None)
    finally:
        store.close()
    if df.empty:
        raise BenchError(f"the store in {out_dir} holds no runs yet")
    df = split_by_checksum(df)
    df["stored_policy"], df["stored_alpha"] = df["threshold_policy"], df["alpha"]
    df = _rethreshold(df, policy, alpha)
    df["threshold_extreme"] = _threshold_extremes(df) if "test_scores" in df else ""
    df["flags"] = df["flags"].fillna("")
    return df


def split_by_checksum(df: pd.DataFrame) -> pd.DataFrame:
    """A dataset name the store holds for two files' data (a store written before ``run`` refused
    that) names each by its checksum too, ``mine (sha256 1a2b3c4d)``: tables, figures, the
    leaderboard and the reproduction report group runs by their data, never by a shared name."""
    shas = df.groupby("dataset").dataset_sha256.nunique()
    twice = set(shas[shas > 1].index)
    if not twice:
        return df
    df = df.copy()
    mask = df.dataset.isin(twice)
    df.loc[mask, "dataset"] = (df.dataset[mask] + " (sha256 "
                               + df.dataset_sha256[mask].fillna("unknown").str[:8] + ")")
    return df


def experiment_info(out_dir) -> dict:
    """What ``run`` remembered beside the store (order.json): method and dataset order, config name,
    whether any run came from ``--quick``."""
    path = Path(out_dir) / ORDER_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _describe(values) -> str:
    vals = [v for v in dict.fromkeys(values) if isinstance(v, str) or np.isfinite(v)]
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in vals) or "none"


def context_line(runs: pd.DataFrame, info: dict) -> str:
    """Protocol, seeds, threshold policy, alpha and budgets of a table or figure, for its caption."""
    ok = runs[runs.status == "ok"]
    policies = _describe(ok.threshold_policy)
    if PAPER_POLICY in set(ok.threshold_policy):
        policies = policies.replace(PAPER_POLICY, "paper (kde for the reconstruction-based methods, "
                                    "PyOD's percentile for the others)")
    quick = info.get("quick")
    budget = ("--quick budgets" if quick else "full budgets" if quick is not None
              else "budgets not recorded")
    seeds = f"; seeds {_seed_text(runs.seed)}" if len(runs) else ""
    return (f"Protocol {_describe(runs.protocol)}{seeds}; threshold {policies}, alpha "
            f"{_describe(ok.alpha.astype(float))}; {budget}")


def variant_name(policy: str | None, alpha: float | None, runs: pd.DataFrame) -> str | None:
    """Sub-folder for tables under a threshold other than the stored one (None: the stored one)."""
    if policy is None and alpha is None:
        return None
    ok = runs[runs.status == "ok"]
    same_policy = policy is None or set(ok.stored_policy) <= {policy}
    same_alpha = alpha is None or set(ok.stored_alpha.astype(float)) <= {float(alpha)}
    if same_policy and same_alpha:
        return None
    name = policy or "stored"
    return name + (f"-alpha{alpha:g}" if alpha is not None else "")


def _canonical(spec: str) -> str:
    """A spec as the store writes it (parameters sorted), so a config's spelling finds its runs."""
    try:
        return registry.format_spec(*registry.parse_spec(spec))
    except BenchError:
        return spec


def _order(df: pd.DataFrame, col: str, preferred) -> list:
    seen = list(dict.fromkeys(df[col]))
    if col == "spec":
        preferred = [_canonical(x) for x in (preferred or [])]
    first = [x for x in dict.fromkeys(preferred or []) if x in seen]
    return first + [x for x in seen if x not in first]


ORDER_FILE = "order.json"


def remember_order(out_dir, methods, datasets, quick: bool | None = None,
                   config: str | None = None, featured=None, baseline: str | None = None) -> None:
    """Keep the experiment's method and dataset order beside the store, so that ``report`` without a
    config lays tables out as the run did. A later run with other methods appends to the order.
    ``quick``: whether this run used ``--quick`` budgets (once any run did, the directory says so);
    ``config``: the experiment's name, for the report's header; ``featured`` and ``baseline``: the
    config's methods the figures feature and the leaderboard's default baseline (the latest run's)."""
    path = Path(out_dir) / ORDER_FILE
    old = json.loads(path.read_text()) if path.is_file() else {"methods": [], "datasets": []}
    new = {**old, "methods": list(dict.fromkeys([*old["methods"], *methods])),
           "datasets": list(dict.fromkeys([*old["datasets"], *datasets]))}
    if quick is not None:
        new["quick"] = bool(old.get("quick")) or bool(quick)
    if config is not None:
        new["config"] = config
    if featured is not None:
        new["featured"] = list(featured)
    if baseline is not None:
        new["baseline"] = baseline
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=1) + "\n")


def _seed_text(seeds) -> str:
    s = sorted({int(x) for x in seeds})
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 1 else ",".join(map(str, s))
