"""``python run_bench.py show [METHOD]``: a store's numbers in the terminal, without opening runs.csv.

With a method (a spec, or a method name that picks every spec of that method): one row per run
(dataset, seed, status, AUC, AP, recall, F1) and then the mean +- std over seeds per dataset. Without:
one summary table of every spec, the four metrics averaged over the datasets it ran on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench import BenchError
from bench.contract import registry

SHOWN = ("auc", "ap", "recall", "f1")
NAMES = {"auc": "AUC", "ap": "AP", "recall": "recall", "f1": "F1"}


def pick_specs(runs: pd.DataFrame, method: str) -> list[str]:
    """The store's specs ``method`` names: the spec itself (in any parameter order), else every spec of
    that method name. BenchError listing the store's specs when there is none."""
    specs = list(dict.fromkeys(runs.spec))
    try:
        canonical = registry.format_spec(*registry.parse_spec(method))
    except BenchError:
        canonical = method
    if canonical in specs:
        return [canonical]
    same = [s for s in specs if s.split("[", 1)[0] == method]
    if not same:
        raise BenchError(f"no runs of {method!r} in this store; it holds {', '.join(specs)}")
    return same


def _num(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _mean_std(values: pd.Series) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "-"
    return f"{v.mean():.3f}" if len(v) == 1 else f"{v.mean():.3f} +- {v.std(ddof=1):.3f}"


def seed_rows(runs: pd.DataFrame, spec: str) -> pd.DataFrame:
    """One row per run of ``spec``: dataset, protocol, seed, status and the four metrics (``-`` where a
    run has none, e.g. failed; its error follows)."""
    sub = runs[runs.spec == spec].sort_values(["protocol", "dataset", "seed"], kind="stable")
    rows = []
    for r in sub.itertuples():
        ok = r.status == "ok"
        row = {"dataset": r.dataset, "protocol": r.protocol, "seed": int(r.seed), "status": r.status}
        row.update({NAMES[m]: _num(getattr(r, m)) if ok else "-" for m in SHOWN})
        why = " ".join(str(v) for v in (r.error, r.flags) if isinstance(v, str) and v)
        row["note"] = why[:80]
        rows.append(row)
    return pd.DataFrame(rows)


def dataset_summary(runs: pd.DataFrame, spec: str) -> pd.DataFrame:
    """Per dataset (and protocol) of ``spec``: mean +- std over the seeds of its ok runs."""
    sub = runs[(runs.spec == spec) & (runs.status == "ok")]
    rows = []
    for (protocol, dataset), g in sub.groupby(["protocol", "dataset"], sort=False):
        rows.append({"dataset": dataset, "protocol": protocol, "seeds": len(g),
                     **{NAMES[m]: _mean_std(g[m]) for m in SHOWN}})
    return pd.DataFrame(rows)


def store_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Every spec: the mean over its datasets of the per-dataset means over seeds (ok runs), per
    metric, with how many datasets and ok runs that took."""
    ok = runs[runs.status == "ok"]
    rows = []
    for spec in dict.fromkeys(runs.spec):
        g = ok[ok.spec == spec]
        per_dataset = g.groupby(["protocol", "dataset"])[list(SHOWN)].mean()
        rows.append({"method": spec, "datasets": len(per_dataset), "ok runs": len(g),
                     "of": int((runs.spec == spec).sum()),
                     **{NAMES[m]: _num(per_dataset[m].mean()) if len(per_dataset) else "-" for m in SHOWN}})
    return pd.DataFrame(rows)


def text(runs: pd.DataFrame, context: str, method: str | None = None) -> str:
    """What ``show`` prints."""
    if method is None:
        table = store_summary(runs)
        return (f"{context}\nevery method: mean over datasets of the mean over seeds (ok runs)\n\n"
                + table.to_string(index=False) + "\n")
    parts = [context]
    for spec in pick_specs(runs, method):
        parts.append(f"\n{spec}: per seed")
        parts.append(seed_rows(runs, spec).to_string(index=False))
        summary = dataset_summary(runs, spec)
        parts.append(f"\n{spec}: mean +- std over seeds (ok runs)")
        parts.append(summary.to_string(index=False) if len(summary) else "(no ok run)")
    return "\n".join(parts) + "\n"
