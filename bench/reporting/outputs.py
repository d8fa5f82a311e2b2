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
from bench.evaluation.metrics import METRICS
from bench.evaluation.thresholds import PAPER_POLICY
from bench.execution.store import Store
from bench.reporting.runtable import (CSV_COLUMNS, _rethreshold, load_runs, experiment_info, _describe,
                                  context_line, variant_name, _canonical, _order, _seed_text)

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
    from bench.reporting import figures, tables

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
        table_dir = (base if variant else out_dir / "tables") / suffix
        written += tables.write_tables(table_runs, table_dir, context=context)
        if variant:
            continue
        ok = sub[sub.status == "ok"]
        curves = [{"method": r.spec, "dataset": r.dataset, "seed": int(r.seed),
                   "y_test": r.y_test, "scores": r.test_scores} for r in ok.itertuples()]
        if curves:
            figure_dir = out_dir / "figures" / suffix
            written += figures.write_curve_figures(curves, figure_dir, chosen, info.get("featured", ()), context)
            written.append(figures.write_small_multiples(curves, figure_dir / "small-multiples.png",
                                                        chosen, context, info.get("featured", ())))
        if training_curves:
            for r in sub.itertuples():
                if isinstance(r.history, str) and r.history not in ("null", ""):
                    hist = json.loads(r.history)
                    if hist and len(hist.get("iteration", [])) > 1:
                        name = f"{r.spec}-{r.dataset}-seed{r.seed}".replace("/", "_")
                        written.append(figures.write_training_curves(
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
    from bench.execution.progress import execution_summary
    from bench.reporting import tables

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
                  + tables.markdown_table(shown), encoding="utf-8")
    return [csv, md]


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
            lb = leaderboard.build(sub, metric, None, context, info.get("baseline"))
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
