"""Everything in an output directory that is derived from the store: runs.csv, tables/, figures/,
the reproduction report (compare/), the leaderboard and index.html.

Always drawn from the stored records and raw scores, never from memory, so ``report`` can
regenerate it at any time (with another threshold policy or alpha, without re-training). Another
policy or alpha than the runs were stored with writes its tables beside the default ones, in
``tables/<policy>[-alpha<a>]/``, never over them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BenchError
from bench.contract import registry
from bench.evaluation.metrics import METRICS, evaluate
from bench.execution.store import Store
from bench.evaluation.thresholds import PAPER_POLICY, threshold as compute_threshold

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
                   config: str | None = None) -> None:
    """Keep the experiment's method and dataset order beside the store, so that ``report`` without a
    config lays tables out as the run did. A later run with other methods appends to the order.
    ``quick``: whether this run used ``--quick`` budgets (once any run did, the directory says so);
    ``config``: the experiment's name, for the report's header."""
    path = Path(out_dir) / ORDER_FILE
    old = json.loads(path.read_text()) if path.is_file() else {"methods": [], "datasets": []}
    new = {**old, "methods": list(dict.fromkeys([*old["methods"], *methods])),
           "datasets": list(dict.fromkeys([*old["datasets"], *datasets]))}
    if quick is not None:
        new["quick"] = bool(old.get("quick")) or bool(quick)
    if config is not None:
        new["config"] = config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(new, indent=1) + "\n")


def build_report(out_dir, policy: str | None = None, alpha: float | None = None,
                 method_order=None, dataset_order=None, training_curves: bool = False,
                 chosen=None, published: str | None = "auto", html: bool = True) -> list[Path]:
    """Write everything derived from the store in ``out_dir``. Under a threshold policy or alpha other
    than the stored one, only the threshold-dependent files (runs.csv and tables) are written, into
    ``tables/<variant>/``. ``chosen``: the methods the curve figures feature (default: the adVAE
    family and the best few others). ``published``: the published source the reproduction report
    compares with ("auto": the one published under the runs' protocol; None: no reproduction
    report)."""
    out_dir = Path(out_dir)
    df = load_runs(out_dir, policy, alpha)
    from bench.reporting import report

    info = experiment_info(out_dir)
    if method_order is None:
        method_order = info.get("methods")
    if dataset_order is None:
        dataset_order = info.get("datasets")
    methods = _order(df, "spec", method_order)
    datasets = _order(df, "dataset", dataset_order)
    df["_m"] = df.spec.map(methods.index)
    df["_d"] = df.dataset.map(datasets.index)
    df = df.sort_values(["protocol", "_m", "_d", "seed"]).drop(columns=["_m", "_d"])
    chosen = [_canonical(m) for m in chosen] if chosen else None
    if chosen:
        missing = [m for m in chosen if m not in methods]
        if missing:
            raise BenchError(f"--methods: {', '.join(missing)} not in the store in {out_dir} "
                             f"(it has {', '.join(methods)})")

    variant = variant_name(policy, alpha, df)
    base = out_dir / "tables" / variant if variant else out_dir
    written = []
    tidy = df.assign(method=df.spec.rename("method"), spec=df.spec)
    csv_path = base / "runs.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tidy[CSV_COLUMNS].to_csv(csv_path, index=False, float_format="%.6g")
    written.append(csv_path)

    protocols = list(dict.fromkeys(df.protocol))
    sections: list[tuple[str, str, str]] = []
    for protocol in protocols:
        sub = df[df.protocol == protocol]
        suffix = Path(protocol) if len(protocols) > 1 else Path()
        context = context_line(sub, info)
        table_runs = sub.assign(method=sub.spec)[["method", "dataset", "seed", "status", "flags",
                                                  "threshold_extreme", *METRICS]]
        tables = (base if variant else out_dir / "tables") / suffix
        written += report.write_tables(table_runs, tables, context=context)
        if variant:
            continue
        ok = sub[sub.status == "ok"]
        curves = [{"method": r.spec, "dataset": r.dataset, "seed": int(r.seed),
                   "y_test": r.y_test, "scores": r.test_scores} for r in ok.itertuples()]
        if curves:
            figures = out_dir / "figures" / suffix
            written += report.write_curve_figures(curves, figures, chosen, context)
            written.append(report.write_small_multiples(curves, figures / "small-multiples.png",
                                                        chosen, context))
        if training_curves:
            for r in sub.itertuples():
                if isinstance(r.history, str) and r.history not in ("null", ""):
                    hist = json.loads(r.history)
                    if hist and len(hist.get("iteration", [])) > 1:
                        name = f"{r.spec}-{r.dataset}-seed{r.seed}".replace("/", "_")
                        written.append(report.write_training_curves(
                            hist, out_dir / "figures" / suffix / "training" / f"{name}.png",
                            f"{r.spec} on {r.dataset}, seed {r.seed} ({r.protocol})"))
        files, secs = _people_sections(out_dir, sub, suffix, info, published,
                                       protocol if len(protocols) > 1 else "")
        written += files
        sections += secs
    if not variant:
        written += _write_timings(out_dir)
        from bench.reporting import sensitivity
        from bench.reporting.compare import PUBLISHED_DIR

        meta = {"threshold": ",".join(sorted(set(df.threshold_policy.dropna()))),
                "alpha": ",".join(f"{a:g}" for a in sorted(set(df.alpha.dropna()))),
                "seeds": _seed_text(df.seed), "budgets": "--quick" if info.get("quick") else ""}
        studies = sensitivity.write_all(df, out_dir, meta, PUBLISHED_DIR, methods, datasets)
        written += studies
        if studies:
            sections.append(_study_section(out_dir, studies))
    if html and not variant:
        from bench.reporting import html as page

        written.append(page.write_index(out_dir, _page_meta(out_dir, df, info), sections))
    return written


def _write_timings(out_dir: Path) -> list[Path]:
    """``tables/cpu-by-method.{csv,md}``: CPU and wall seconds of every group that wrote this store,
    by method (bench.execution.progress.execution_summary); nothing without an execution log."""
    from bench.reporting import report
    from bench.execution.progress import execution_summary

    t = execution_summary(out_dir)
    if t.empty:
        return []
    csv = out_dir / "tables" / "cpu-by-method.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    t.to_csv(csv, index=False, float_format="%.2f")
    shown = t.assign(wall_seconds=t.wall_seconds.map("{:.0f}".format),
                     cpu_seconds=t.cpu_seconds.map("{:.0f}".format),
                     cpu_share=t.cpu_share.map("{:.1%}".format))
    total = f"{t.cpu_seconds.sum():.0f} s of CPU in {int(t.groups.sum())} groups ({int(t.runs.sum())} runs)"
    md = csv.with_suffix(".md")
    md.write_text("CPU and wall seconds by method, summed over every group that wrote this store "
                  f"(executions.jsonl; wall seconds overlap across workers): {total}.\n\n"
                  + report.markdown_table(shown), encoding="utf-8")
    return [csv, md]


def _seed_text(seeds) -> str:
    s = sorted({int(x) for x in seeds})
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 1 else ",".join(map(str, s))


LEADERBOARD_METRICS = ("auc", "ap", "f1")


def _page_meta(out_dir: Path, df: pd.DataFrame, info: dict) -> dict:
    from bench.reporting.html import versions_text

    ok = df[df.status == "ok"]
    seeds = sorted(set(df.seed.astype(int)))
    quick = info.get("quick")
    latest = df.sort_values("created_at").iloc[-1]
    return {"config": info.get("config", out_dir.name),
            "protocol": _describe(df.protocol),
            "threshold policy": context_line(df, info).split("; threshold ", 1)[1].split(", alpha")[0],
            "alpha": _describe(ok.alpha.astype(float)),
            "seeds": ", ".join(map(str, seeds)),
            "budgets": "--quick" if quick else "full" if quick is not None else "not recorded",
            "runs": f"{len(df)} ({', '.join(f'{k} {v}' for k, v in df.status.value_counts().items())})",
            "methods x datasets": f"{df.spec.nunique()} x {df.dataset.nunique()}",
            "commit": _describe(df.git_commit.fillna("unknown")),
            "library versions": versions_text(latest.get("versions")),
            "store": str(out_dir / "runs.sqlite")}


def _people_sections(out_dir: Path, sub: pd.DataFrame, suffix: Path, info: dict,
                     published: str | None, label: str) -> tuple[list[Path], list]:
    """Leaderboards, the reproduction report and the figure gallery of one protocol's runs, as files
    and as index.html sections. A part that cannot be made from these runs (e.g. too few methods,
    another protocol than the paper's) is skipped with a note on the page, never an error."""
    from bench.reporting import compare, html as page, leaderboard

    context = context_line(sub, info)
    files: list[Path] = []
    tag = f" ({label})" if label else ""
    anchor = f"-{label}" if label else ""
    secs = []
    # leaderboards
    body = []
    lb_dir = out_dir / "leaderboard" / suffix
    for metric in LEADERBOARD_METRICS:
        try:
            lb = leaderboard.build(sub, metric, None, context)
        except BenchError as exc:
            body.append(f'<p class="note">{metric.upper()}: no leaderboard ({page.esc(exc)})</p>')
            continue
        files += leaderboard.write(lb, lb_dir)
        disp = leaderboard.display_frame(lb)
        sortv = pd.DataFrame(np.nan, index=disp.index, columns=disp.columns)
        for c in disp.columns[1:-1]:
            sortv[c] = pd.to_numeric(disp[c], errors="coerce")
        body.append(f"<h3>{metric.upper()}</h3><p class=\"note\">{page.esc(leaderboard.caption(lb))}</p>"
                    + page.table(disp, f"leaderboard-{metric}{anchor}", sortv)
                    + "".join(f'<p class="note">{page.esc(x)}</p>'
                              for x in leaderboard.statistics_lines(lb)))
        rel = (lb_dir / f"cd-{metric}.png").relative_to(out_dir).as_posix()
        if (out_dir / rel).is_file():
            body.append(page.figure(rel, f"CD diagram, {metric.upper()}"))
        rel = (lb_dir / f"wilcoxon-{metric}.png").relative_to(out_dir).as_posix()
        if (out_dir / rel).is_file():
            body.append(page.figure(rel, f"Pairwise Wilcoxon, Holm-adjusted, {metric.upper()}"))
    secs.append((f"leaderboard{anchor}", f"Leaderboard{tag}", "".join(body)))
    # metric tables
    body = []
    tables = out_dir / "tables" / suffix
    for metric in METRICS:
        csv = tables / f"{metric}.csv"
        if csv.is_file():
            text, sortv, cls = page.metric_table(csv)
            caption = (tables / f"{metric}.md").read_text(encoding="utf-8").split("\n\n", 1)[0]
            notes = (tables / f"{metric}.md").read_text(encoding="utf-8").split("|\n\n", 1)
            body.append(f"<h3>{metric.upper()}</h3><p class=\"note\">{page.esc(caption)}</p>"
                        + page.table(text, f"table-{metric}{anchor}", sortv, cls)
                        + (f'<p class="note">{page.esc(notes[1]).replace(chr(10), "<br>")}</p>'
                           if len(notes) > 1 else ""))
    secs.append((f"tables{anchor}", f"Metric tables{tag}", "".join(body)))
    # reproduction report
    if published == "auto":
        published = compare.for_protocol(str(sub.protocol.iloc[0])) or compare.DEFAULT_PUBLISHED
    if published:
        try:
            pub = compare.load_published(published)
            runs = _rethreshold(sub, PAPER_POLICY, pub.meta.get("alpha"))
            cmp, made = compare.run(runs, pub, out_dir / "compare" / suffix,
                                    context_line(runs, info))
        except BenchError as exc:
            secs.append((f"reproduction{anchor}", f"Reproduction{tag}",
                         f'<p class="note">No reproduction report: {page.esc(exc)}</p>'))
        else:
            files += made
            disp = cmp.assign(ours=[compare._cell(r) for _, r in cmp.iterrows()])
            disp = disp[["method", "dataset", "metric", "published", "ours", "min", "max", "diff",
                         "place", "note"]]
            text = disp.copy()
            for c in ("published", "min", "max"):
                text[c] = disp[c].map(lambda v: "" if not np.isfinite(v) else f"{v:.3f}")
            text["diff"] = disp["diff"].map(lambda v: "" if not np.isfinite(v) else f"{v:+.3f}")
            sortv = pd.DataFrame(np.nan, index=disp.index, columns=disp.columns)
            for c in ("published", "min", "max", "diff"):
                sortv[c] = disp[c]
            sortv["ours"] = cmp["mean"]
            body = (f'<p class="note">{page.esc(pub.meta.get("source", pub.name))} of '
                    f'{page.esc(pub.meta.get("citation", ""))}; published values are shown as '
                    "published (one run per cell) and never enter our means or ranks.</p>"
                    + '<p class="note">' + page.esc(
                        f"{context_line(runs, info)}: recall and F1 of this section are under the "
                        "paper's own threshold policy, whatever the metric tables use (their captions "
                        "say which), so the two may differ for one cell.") + "</p><ul>"
                    + "".join(f"<li>{page.esc(x)}</li>" for x in compare.summary_lines(cmp))
                    + "</ul>"
                    + "".join(page.figure(p.relative_to(out_dir).as_posix(),
                                          f"{p.stem.rsplit('-', 1)[1].upper()}: ours minus "
                                          "published (dots: seeds; bar and diamond: our range and "
                                          "mean; 0: the published value)")
                              for p in made if p.suffix == ".png")
                    + page.table(text, f"reproduction{anchor}-table", sortv))
            secs.append((f"reproduction{anchor}", f"Reproduction of {pub.name}{tag}", body))
    # figures
    figs = out_dir / "figures" / suffix
    imgs = []
    if (figs / "small-multiples.png").is_file():
        imgs.append(page.figure((figs / "small-multiples.png").relative_to(out_dir).as_posix(),
                                "PR (top) and ROC (bottom), every dataset, featured methods"))
    grid = [page.figure(p.relative_to(out_dir).as_posix(), p.stem.replace("-pr", ": precision-recall")
                        .replace("-roc", ": ROC"))
            for p in sorted(figs.glob("*-*.png")) if p.stem.endswith(("-pr", "-roc"))]
    secs.append((f"figures{anchor}", f"Figures{tag}",
                 "".join(imgs) + f'<div class="grid">{"".join(grid)}</div>'))
    return files, secs


def _cell_text(v) -> str:
    return (f"{v:.3f}" if np.isfinite(v) else "") if isinstance(v, float) else str(v)


def _study_section(out_dir: Path, files: list[Path]) -> tuple[str, str, str]:
    """index.html's section for the sweeps' and contamination's figures and tables."""
    from bench.reporting import html as page

    body = [page.figure(p.relative_to(out_dir).as_posix(), p.stem.replace("-", " "))
            for p in files if p.suffix == ".png"]
    for csv in (p for p in files if p.suffix == ".csv"):
        md = csv.with_suffix(".md")
        first = md.read_text(encoding="utf-8").splitlines()[0] if md.is_file() else ""
        caption = first.removeprefix("<!-- ").removesuffix(" -->")
        table = pd.read_csv(csv)
        text = table.apply(lambda col: col.map(_cell_text))
        body.append(f"<h3>{page.esc(csv.stem)}</h3><p class=\"note\">{page.esc(caption)}</p>"
                    + page.table(text, f"table-{csv.stem}", table.apply(pd.to_numeric, errors="coerce")))
    return ("sensitivity", "Sensitivity and contamination", "".join(body))


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
