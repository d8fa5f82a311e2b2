#!/usr/bin/env python
"""Publish what a result store shows, without the store: the leaderboards and CD diagrams, the
reproduction report, the metric tables, CPU by method, runs.csv, the config that made them, and a
PROVENANCE.md (commits, library versions, machine, run counts, CPU) into a folder that is committed.

    python tools/publish_results.py --results runs/adbench --config configs/adbench.toml \
        --out results/adbench-leaderboard

The report is (re)built from the store first (`run_bench.py report`); nothing is recomputed and no
test label is read beyond what the report itself computes. The destination is replaced whole.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.execution import config as experiment_config, progress  # noqa: E402
from bench.reporting import outputs, runtable  # noqa: E402

#: What is copied from the store's folder (never runs.sqlite, the raw scores).
PARTS = ("leaderboard", "compare", "tables", "runs.csv", "order.json")


def provenance(results: Path, config: Path | None) -> str:
    df = runtable.load_runs(results)
    versions = Counter(json.dumps(json.loads(v), sort_keys=True) for v in df.versions.dropna())
    commits = Counter(df.git_commit.fillna("unknown"))
    statuses = Counter(df.status)
    cpu = progress.execution_summary(results)
    lines = [f"# Provenance of this folder", "",
             f"Published {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by tools/publish_results.py from "
             f"the store {results} ({len(df)} runs: "
             + ", ".join(f"{n} {s}" for s, n in statuses.most_common()) + ").", "",
             f"- Config: `{config}` (copied beside this file)" if config else "- Config: not given",
             "- Protocol(s): " + ", ".join(sorted(set(df.protocol))),
             "- Threshold policy: " + ", ".join(sorted(set(df.threshold_policy.dropna())))
             + "; seeds: " + ", ".join(str(s) for s in sorted(set(df.seed.astype(int)))),
             "- Code: the runs' git commits: "
             + ", ".join(f"`{c[:10]}` ({n} runs)" for c, n in commits.most_common()),
             "- Machine of this publication: " + f"{platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
             "", "Library versions recorded with the runs (runs per set):", ""]
    for v, n in versions.most_common():
        lines.append(f"- {n} runs: " + ", ".join(f"{k} {val}" for k, val in json.loads(v).items()))
    if not cpu.empty:
        lines += ["", f"CPU over every group that wrote the store: {cpu.cpu_seconds.sum():.0f} s "
                  f"({cpu.cpu_seconds.sum() / 3600:.2f} h); by method in tables/cpu-by-method.md."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, help="the result store's folder")
    p.add_argument("--config", help="the config the store was run with (copied)")
    p.add_argument("--out", required=True, help="destination folder (replaced)")
    p.add_argument("--parts", default=",".join(PARTS),
                   help=f"what to copy, comma-separated (default: {','.join(PARTS)})")
    a = p.parse_args(argv)
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    if not parts or set(parts) - set(PARTS):
        print(f"error: --parts takes some of {', '.join(PARTS)}, got {a.parts!r}", file=sys.stderr)
        return 2
    results, out = Path(a.results), Path(a.out)
    if not (results / "runs.sqlite").is_file():
        print(f"error: no store in {results} (runs.sqlite missing)", file=sys.stderr)
        return 2
    if a.config:  # what `run` remembers beside the store, from this config (featured, baseline, order)
        exp = experiment_config.load(a.config)
        runtable.remember_order(results, exp.methods, exp.dataset_names, None, exp.name, exp.featured,
                                exp.baseline)
    outputs.build_report(results, method_order=None, html=False)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for part in parts:
        src = results / part
        if src.is_dir():
            shutil.copytree(src, out / part)
        elif src.is_file():
            shutil.copy2(src, out / part)
    config = Path(a.config) if a.config else None
    if config:
        shutil.copy2(config, out / config.name)
    (out / "PROVENANCE.md").write_text(provenance(results, config), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
