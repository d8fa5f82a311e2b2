"""Sensitivity and contamination studies drawn from the store: the adVAE paper's Figure 9.

A *sweep* is recognised from the stored specs alone: specs of one method whose written parameters
are the same single name with at least two values (``advae[m_x=0.5]``, ``advae[m_x=1.0]`` ...), which
is what a config's ``[[sweep]]`` or ``--sweep`` writes. For each swept parameter and metric (AP, AUC):
a figure with the metric against the value, one line per dataset (mean over seeds, min..max band),
the value the experiment otherwise uses on that dataset marked (the resolved value of the same
method's runs that do not sweep it: with configs/paper.toml's overrides, the paper's Table 2 value),
and, where given, the paper's curve read off its Figure 9 as a dashed line; and the same numbers as a
table (CSV, Markdown, LaTeX).

A *contamination study* is recognised from protocols named ``<protocol>+adasyn=<rate>``: the metric,
averaged over the datasets, against the rate, one line per method (band: min..max over seeds of the
dataset average), as the paper's Figure 9 (f), with its curves dashed where given.

Published values are drawn as published and never enter a mean.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import BenchError  # noqa: E402
from bench.contract import registry
from bench.evaluation.protocols import parse_protocol  # noqa: E402

METRICS = {"ap": "AP", "auc": "AUC"}
PUBLISHED_NOTE = "paper (read off its Figure 9, about +-0.01)"
#: A y axis of AP or AUC never spans less than this: a 0.002 wobble of a --quick sweep is drawn as
#: the flat line it is, not zoomed into a V.
MIN_SPAN = 0.1


# ---- finding the studies --------------------------------------------------------------------------
def find_sweeps(specs) -> dict[tuple[str, str], dict[str, object]]:
    """{(method name, param): {spec: value}} for every swept parameter among ``specs``."""
    found: dict[tuple[str, str], dict[str, object]] = {}
    for spec in dict.fromkeys(specs):
        try:
            name, params = registry.parse_spec(spec)
        except BenchError:
            continue
        if len(params) == 1:
            (param, value), = params.items()
            found.setdefault((name, param), {})[spec] = value
    return {k: v for k, v in found.items() if len({float(x) if _is_num(x) else x
                                                   for x in v.values()}) >= 2}


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def sweep_frame(df: pd.DataFrame, name: str, param: str, specs: dict[str, object],
                metric: str) -> pd.DataFrame:
    """One row per (dataset, value): mean, std, min, max of ``metric`` over the ok runs' seeds, and n."""
    ok = df[(df.status == "ok") & df.spec.isin(list(specs))]
    rows = []
    for (dataset, spec), grp in ok.groupby(["dataset", "spec"], sort=False):
        v = grp[metric].astype(float)
        rows.append({"param": param, "value": specs[spec], "dataset": dataset, "mean": v.mean(),
                     "std": v.std(ddof=1) if len(v) > 1 else 0.0, "min": v.min(), "max": v.max(),
                     "n": len(v)})
    out = pd.DataFrame(rows, columns=["param", "value", "dataset", "mean", "std", "min", "max", "n"])
    return out.sort_values(["dataset", "value"]).reset_index(drop=True)


def chosen_values(df: pd.DataFrame, name: str, param: str, sweep_specs) -> dict[str, object]:
    """dataset -> the value of ``param`` in the resolved parameters of ``name``'s runs that do not
    sweep it (the experiment's own setting of it on that dataset), where such runs exist."""
    import json

    others = df[(df.method == name) & ~df.spec.isin(list(sweep_specs))]
    out = {}
    for dataset, grp in others.groupby("dataset"):
        vals = {json.dumps(json.loads(p).get(param)) for p in grp.params if isinstance(p, str)}
        if len(vals) == 1:
            value = json.loads(vals.pop())
            if value is not None:
                out[dataset] = value
    return out


def contamination_frame(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (method spec, rate): the metric averaged over datasets for each seed, then mean,
    min and max over seeds; only (spec, rate, seed) with an ok run on every dataset count."""
    rows = []
    for protocol in dict.fromkeys(df.protocol):
        base, rate = parse_protocol(protocol)
        if rate is None:
            continue
        sub = df[(df.protocol == protocol)]
        n_datasets = sub.dataset.nunique()
        for spec, grp in sub.groupby("spec", sort=False):
            ok = grp[grp.status == "ok"]
            per_seed = ok.groupby("seed").filter(lambda g: g.dataset.nunique() == n_datasets)
            avg = per_seed.groupby("seed")[metric].mean()
            if len(avg):
                rows.append({"spec": spec, "base": base, "rate": rate, "mean": avg.mean(),
                             "min": avg.min(), "max": avg.max(), "seeds": len(avg),
                             "datasets": n_datasets})
    return pd.DataFrame(rows, columns=["spec", "base", "rate", "mean", "min", "max", "seeds",
                                       "datasets"])


# ---- published curves -----------------------------------------------------------------------------
def published_fig9(published_dir) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The paper's Figure 9 (a)-(e) and (f) values, if the files are there."""
    d = Path(published_dir) if published_dir else None
    a = d / "wang2020-kbs-fig9.csv" if d else None
    f = d / "wang2020-kbs-fig9f.csv" if d else None
    fig9 = pd.read_csv(a) if a and a.is_file() else None
    if fig9 is not None:  # the method the curves belong to, as its toml says (read by name, never assumed)
        meta_path = a.with_suffix(".toml")
        meta = tomllib.loads(meta_path.read_text()) if meta_path.is_file() else {}
        fig9["method"] = meta.get("method", "")
    return fig9, pd.read_csv(f) if f and f.is_file() else None


# ---- drawing and writing --------------------------------------------------------------------------
def _log_x(values) -> bool:
    nums = [float(v) for v in values if _is_num(v) and float(v) > 0]
    return len(nums) >= 2 and max(nums) / min(nums) >= 20


def hold_span(ax) -> None:
    """Widen the y axis to MIN_SPAN around its data (within [0, 1]) when matplotlib zoomed closer, and
    say so on the axis."""
    lo, hi = ax.get_ylim()
    if hi - lo >= MIN_SPAN:
        return
    mid = (lo + hi) / 2
    lo, hi = mid - MIN_SPAN / 2, mid + MIN_SPAN / 2
    if lo < 0:
        lo, hi = 0.0, MIN_SPAN
    elif hi > 1.0:
        lo, hi = 1.0 - MIN_SPAN, 1.0
    ax.set_ylim(lo, hi)
    ax.set_ylabel(f"{ax.get_ylabel()}\n(axis spans {MIN_SPAN:g}: the values differ by less)", fontsize=8)


def _caption(meta: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in meta.items() if v not in (None, ""))


def write_sweep(df: pd.DataFrame, name: str, param: str, specs: dict, out_dir: Path,
                meta: dict, published: pd.DataFrame | None, datasets: list[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    chosen = chosen_values(df, name, param, specs)
    for metric, label in METRICS.items():
        frame = sweep_frame(df, name, param, specs, metric)
        if frame.empty:
            continue
        pub = None
        if published is not None and metric == "ap" and name in set(published.method):
            pub = published[published.param == param]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        order = [d for d in datasets if d in set(frame.dataset)] + \
            [d for d in dict.fromkeys(frame.dataset) if d not in datasets]
        starred = False
        for i, dataset in enumerate(order):
            c = colours[i % len(colours)]
            sub = frame[frame.dataset == dataset]
            x = sub.value.astype(float).to_numpy()
            ax.plot(x, sub["mean"], "-o", color=c, ms=3, label=dataset)
            ax.fill_between(x, sub["min"], sub["max"], color=c, alpha=0.15, lw=0)
            if dataset in chosen and _is_num(chosen[dataset]):
                cv = float(chosen[dataset])
                hit = sub[np.isclose(x, cv)]
                y = float(hit["mean"].iloc[0]) if len(hit) else np.interp(cv, x, sub["mean"])
                ax.plot([cv], [y], marker="*", ms=12, color=c, mec="black", mew=0.6, ls="none")
                starred = True
            if pub is not None:
                p = pub[pub.dataset == dataset].sort_values("value")
                if len(p):
                    ax.plot(p.value, p.ap, "--", color=c, lw=1, alpha=0.9)
        if _log_x(frame.value):
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{label} (mean over seeds; band min..max)")
        hold_span(ax)
        handles, labels = ax.get_legend_handles_labels()
        if starred:  # the legend names only what is drawn
            handles.append(plt.Line2D([], [], marker="*", ms=10, color="grey", mec="black", ls="none"))
            labels.append("value used elsewhere (Table 2)")
        if pub is not None and len(pub):
            handles.append(plt.Line2D([], [], ls="--", color="grey"))
            labels.append(PUBLISHED_NOTE)
        ax.legend(handles, labels, fontsize=7, loc="best")
        ax.set_title(f"{name}: {label} against {param}\n{_caption(meta)}", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"sensitivity-{name}-{param}-{metric}.png"
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)
    return written


def sensitivity_table(df: pd.DataFrame, sweeps: dict, metric: str, published: pd.DataFrame | None,
                      datasets: list[str]) -> pd.DataFrame:
    """Rows (method, param, value); per dataset our mean +- std over seeds and the paper's value."""
    rows = []
    for (name, param), specs in sweeps.items():
        frame = sweep_frame(df, name, param, specs, metric)
        for value in sorted(dict.fromkeys(frame.value), key=lambda v: (not _is_num(v), v)):
            row = {"method": name, "param": param, "value": value}
            for dataset in datasets:
                hit = frame[(frame.dataset == dataset) & (frame.value == value)]
                row[dataset] = float(hit["mean"].iloc[0]) if len(hit) else np.nan
                row[f"{dataset} std"] = float(hit["std"].iloc[0]) if len(hit) else np.nan
                if published is not None and metric == "ap" and name in set(published.method):
                    p = published[(published.param == param) & (published.dataset == dataset) &
                                  np.isclose(published.value.astype(float), float(value))]
                    row[f"{dataset} paper"] = float(p.ap.iloc[0]) if len(p) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _markdown(table: pd.DataFrame, datasets: list[str], caption: str) -> str:
    has_pub = any(f"{d} paper" in table for d in datasets)
    head = ["method", "param", "value"] + [f"{d}{' (ours / paper)' if has_pub else ''}"
                                           for d in datasets]
    lines = [f"<!-- {caption} -->", "| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * len(datasets)) + " |"]
    for r in table.to_dict("records"):
        cells = [str(r["method"]), str(r["param"]), f"{r['value']:g}" if _is_num(r["value"])
                 else str(r["value"])]
        for d in datasets:
            m, s = r.get(d, np.nan), r.get(f"{d} std", np.nan)
            cell = "" if not np.isfinite(m) else f"{m:.3f}" + (f" ± {s:.3f}" if np.isfinite(s) else "")
            if has_pub:
                p = r.get(f"{d} paper", np.nan)
                cell += f" / {p:.2f}" if np.isfinite(p) else " / -"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _latex(table: pd.DataFrame, datasets: list[str], caption: str) -> str:
    cols = "lll" + "r" * len(datasets)
    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\begin{{tabular}}{{{cols}}}",
           r"\toprule", " & ".join(["method", "param", "value", *datasets]) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        cells = [str(r["method"]), str(r["param"]).replace("_", r"\_"),
                 f"{r['value']:g}" if _is_num(r["value"]) else str(r["value"])]
        for d in datasets:
            m = r.get(d, np.nan)
            sd = r.get(f"{d} std", np.nan)
            cells.append("" if not np.isfinite(m) else f"{m:.3f}" + (f" $\\pm$ {sd:.3f}" if np.isfinite(sd) else ""))
        out.append(" & ".join(c.replace("_", r"\_") if i == 0 else c for i, c in enumerate(cells))
                   + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_contamination(df: pd.DataFrame, out_dir: Path, meta: dict,
                        published: pd.DataFrame | None, method_order: list[str]) -> list[Path]:
    written = []
    for metric, label in METRICS.items():
        frame = contamination_frame(df, metric)
        if frame.empty or frame.rate.nunique() < 2:
            continue
        (out_dir / "figures").mkdir(parents=True, exist_ok=True)
        (out_dir / "tables").mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        specs = [s for s in method_order if s in set(frame.spec)] + \
            [s for s in dict.fromkeys(frame.spec) if s not in method_order]
        for i, spec in enumerate(specs):
            c = colours[i % len(colours)]
            sub = frame[frame.spec == spec].sort_values("rate")
            ax.plot(100 * sub.rate, sub["mean"], "-o", color=c, ms=3, label=spec)
            ax.fill_between(100 * sub.rate, sub["min"], sub["max"], color=c, alpha=0.15, lw=0)
            if published is not None and metric == "ap":
                p = published[published.method == spec].sort_values("contamination")
                if len(p):
                    ax.plot(100 * p.contamination, p.avg_ap, "--", color=c, lw=1)
        if published is not None and metric == "ap":
            ax.plot([], [], "--", color="grey", label=PUBLISHED_NOTE)
        n_d = int(frame.datasets.max())
        ax.set_xlabel("synthetic anomalies in the training rows (%)")
        ax.set_ylabel(f"{label}, mean over {n_d} datasets (band: min..max over seeds)")
        ax.set_title(f"Contaminated training sets (ADASYN): {label}\n{_caption(meta)}", fontsize=8)
        hold_span(ax)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / "figures" / f"contamination-{metric}.png"
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)
        table = frame.pivot_table(index="spec", columns="rate", values="mean").reindex(specs)
        table.columns = [f"{100 * r:g}%" for r in table.columns]
        csv = out_dir / "tables" / f"contamination-{metric}.csv"
        table.to_csv(csv, float_format="%.4f")
        md = out_dir / "tables" / f"contamination-{metric}.md"
        lines = [f"<!-- {label} averaged over datasets; {_caption(meta)} -->",
                 "| method | " + " | ".join(table.columns) + " |",
                 "| --- | " + " | ".join("---:" for _ in table.columns) + " |"]
        lines += ["| " + " | ".join([str(spec), *(f"{v:.3f}" if np.isfinite(v) else ""
                                                   for v in row)]) + " |"
                  for spec, row in zip(table.index, table.to_numpy(dtype=float))]
        md.write_text("\n".join(lines) + "\n")
        tex = out_dir / "tables" / f"contamination-{metric}.tex"
        tex.write_text(table.to_latex(float_format="%.3f", caption=f"{label} under contamination; "
                                      f"{_caption(meta)}".replace("_", r"\_")))
        written += [csv, md, tex]
    return written


def write_all(df: pd.DataFrame, out_dir, meta: dict, published_dir=None,
              method_order=None, dataset_order=None) -> list[Path]:
    """Every sensitivity and contamination output the store's runs allow, under ``out_dir``
    (``figures/`` and ``tables/``). ``meta`` (protocol, threshold policy, seeds...) goes into every
    caption. Returns the files written (none when the store holds no sweep or contamination)."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    fig9, fig9f = published_fig9(published_dir)
    datasets = list(dataset_order or []) + [d for d in dict.fromkeys(df.dataset)
                                            if d not in (dataset_order or [])]
    for protocol in dict.fromkeys(df.protocol):
        if parse_protocol(protocol)[1] is not None:
            continue
        sub = df[df.protocol == protocol]
        sweeps = find_sweeps(sub.spec)
        if not sweeps:
            continue
        m = {"protocol": protocol, **meta}
        for (name, param), specs in sweeps.items():
            written += write_sweep(sub, name, param, specs, out_dir / "figures", m, fig9, datasets)
        for metric, label in METRICS.items():
            table = sensitivity_table(sub, sweeps, metric, fig9, datasets)
            has_paper = any(str(c).endswith(" paper") for c in table.columns)  # AP of advae only
            caption = (f"{label} per swept value, mean +- std over seeds"
                       f"{'; paper values read off its Figure 9 (+-0.01)' if has_paper else ''}"
                       f"; {_caption(m)}")
            tdir = out_dir / "tables"
            tdir.mkdir(parents=True, exist_ok=True)
            csv, md, tex = (tdir / f"sensitivity-{metric}.{ext}" for ext in ("csv", "md", "tex"))
            table.to_csv(csv, index=False, float_format="%.4f")
            md.write_text(_markdown(table, datasets, caption))
            tex.write_text(_latex(table, datasets, caption))
            written += [csv, md, tex]
    contaminated = df[[parse_protocol(p)[1] is not None for p in df.protocol]]
    if len(contaminated):
        base = sorted({parse_protocol(p)[0] for p in contaminated.protocol})
        m = {"protocol": "+".join(base) + " + adasyn", **meta}
        written += write_contamination(contaminated, out_dir, m, fig9f,
                                       list(method_order or []))
    return written
