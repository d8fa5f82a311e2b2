"""Everything in an output directory that is derived from the store: runs.csv, tables/, figures/.

Always drawn from the stored records and raw scores, never from memory, so ``report`` can
regenerate it at any time (with another threshold policy or alpha, without re-training).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError, registry
from bench.metrics import METRICS, evaluate
from bench.store import Store
from bench.thresholds import threshold as compute_threshold

CSV_COLUMNS = ["method", "spec", "dataset", "protocol", "seed", "status", "flags", "auc", "ap",
               "precision", "recall", "f1", "threshold_policy", "alpha", "threshold",
               "fit_seconds", "score_seconds", "group_size", "device", "error", "params",
               "dataset_sha256", "git_commit", "created_at", "key"]


def _rethreshold(df: pd.DataFrame, policy: str | None, alpha: float | None) -> pd.DataFrame:
    if policy is None and alpha is None:
        return df
    df = df.copy()
    for i, row in df[df.status == "ok"].iterrows():
        pol = policy or row.threshold_policy
        a = alpha if alpha is not None else row.alpha
        thr = compute_threshold(pol, row.train_scores, a)
        m = evaluate(row.y_test, row.test_scores, thr)
        df.loc[i, ["threshold_policy", "alpha", "threshold", *m]] = [pol, a, thr, *m.values()]
    return df


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


def remember_order(out_dir, methods, datasets) -> None:
    """Keep the experiment's method and dataset order beside the store, so that ``report`` without a
    config lays tables out as the run did. A later run with other methods appends to the order."""
    path = Path(out_dir) / ORDER_FILE
    old = json.loads(path.read_text()) if path.is_file() else {"methods": [], "datasets": []}
    new = {"methods": list(dict.fromkeys([*old["methods"], *methods])),
           "datasets": list(dict.fromkeys([*old["datasets"], *datasets]))}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=1) + "\n")


def build_report(out_dir, policy: str | None = None, alpha: float | None = None,
                 method_order=None, dataset_order=None, training_curves: bool = False) -> list[Path]:
    out_dir = Path(out_dir)
    if not (out_dir / "runs.sqlite").is_file():
        raise BenchError(f"no result store in {out_dir} (expected {out_dir / 'runs.sqlite'}); "
                         "run an experiment there first")
    store = Store(out_dir)
    try:
        df = store.latest(with_blobs=True)
    finally:
        store.close()
    if df.empty:
        raise BenchError(f"the store in {out_dir} holds no runs yet")
    from bench import report

    df = _rethreshold(df, policy, alpha)
    remembered = out_dir / ORDER_FILE
    if remembered.is_file() and (method_order is None or dataset_order is None):
        order = json.loads(remembered.read_text())
        method_order = order["methods"] if method_order is None else method_order
        dataset_order = order["datasets"] if dataset_order is None else dataset_order
    methods = _order(df, "spec", method_order)
    datasets = _order(df, "dataset", dataset_order)
    df["_m"] = df.spec.map(methods.index)
    df["_d"] = df.dataset.map(datasets.index)
    df = df.sort_values(["protocol", "_m", "_d", "seed"]).drop(columns=["_m", "_d"])
    df["flags"] = df["flags"].fillna("")

    written = []
    tidy = df.assign(method=df.spec.rename("method"), spec=df.spec)
    csv_path = out_dir / "runs.csv"
    tidy[CSV_COLUMNS].to_csv(csv_path, index=False, float_format="%.6g")
    written.append(csv_path)

    protocols = list(dict.fromkeys(df.protocol))
    for protocol in protocols:
        sub = df[df.protocol == protocol]
        suffix = Path(protocol) if len(protocols) > 1 else Path()
        table_runs = sub.assign(method=sub.spec)[["method", "dataset", "seed", "status", "flags",
                                                  *METRICS]]
        written += report.write_tables(table_runs, out_dir / "tables" / suffix)
        ok = sub[sub.status == "ok"]
        curves = [{"method": r.spec, "dataset": r.dataset, "seed": int(r.seed),
                   "y_test": r.y_test, "scores": r.test_scores} for r in ok.itertuples()]
        if curves:
            written += report.write_curve_figures(curves, out_dir / "figures" / suffix)
        if training_curves:
            for r in sub.itertuples():
                if isinstance(r.history, str) and r.history not in ("null", ""):
                    hist = json.loads(r.history)
                    if hist and len(hist.get("iteration", [])) > 1:
                        name = f"{r.spec}-{r.dataset}-seed{r.seed}".replace("/", "_")
                        written.append(report.write_training_curves(
                            hist, out_dir / "figures" / suffix / "training" / f"{name}.png",
                            f"{r.spec} on {r.dataset}, seed {r.seed} ({r.protocol})"))
    return written


def summary_lines(out_dir, keys=None) -> list[str]:
    """A few lines for the terminal after a run: counts by status and any non-ok run; with ``keys``,
    of those runs only (one invocation's, not what earlier ones left in the store)."""
    store = Store(out_dir)
    try:
        df = store.latest()
    finally:
        store.close()
    if keys is not None:
        df = df[df.key.isin(set(keys))]
    lines = [f"{len(df)} runs stored: " + ", ".join(f"{k} {v}" for k, v in
                                                     df.status.value_counts().items())]
    bad = df[(df.status != "ok") | (df["flags"].fillna("") != "")]
    for r in bad.head(20).itertuples():
        why = " ".join(str(v) for v in (r.error, r.flags) if isinstance(v, str) and v)
        lines.append(f"  {r.status:10s} {r.spec} / {r.dataset} / seed {r.seed}: {why}".rstrip())
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more (see runs.csv)")
    return lines


def mean_table(out_dir, metric: str = "ap") -> pd.DataFrame:
    """methods x datasets mean of a metric over seeds (ok runs), for quick looks and tests."""
    store = Store(out_dir)
    try:
        df = store.latest()
    finally:
        store.close()
    ok = df[df.status == "ok"]
    return ok.pivot_table(index="spec", columns="dataset", values=metric, aggfunc=np.mean)
