"""Command line: ``python run_bench.py {run,report,list,...}``; no arguments = ``run``. Further
subcommands (adVAE's ``reference`` and ``perf``) come from definition modules through
``registry.register_command``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench import BenchError
from bench.data import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "configs" / "paper.toml"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str) -> list[int]:
    try:
        seeds = []
        for part in _csv(text):
            if "-" in part:
                a, b = part.split("-")
                seeds += list(range(int(a), int(b) + 1))
            else:
                seeds.append(int(part))
        return seeds
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0,1,2 or 0-4, got {text!r}")


def _methods(text: str) -> list[str]:
    """Split on commas outside brackets: ``advae[m_x=1,m_z=2],ocsvm``."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_bench.py", description=(
        "advae-bench: adVAE and baselines on five tabular anomaly-detection datasets. "
        "Without arguments: run configs/paper.toml and write results/paper/."))
    sub = p.add_subparsers(dest="command")

    r = sub.add_parser("run", help="run an experiment (skips runs already stored as ok)")
    r.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment TOML (default: %(default)s)")
    r.add_argument("--methods", type=_methods, help="comma-separated method specs, e.g. advae,ocsvm[nu=0.05]")
    r.add_argument("--datasets", type=_csv, help="comma-separated dataset names")
    r.add_argument("--seeds", type=_seeds, help="e.g. 0,1,2 or 0-4")
    r.add_argument("--protocol", help="paper or resample (default: the config's)")
    r.add_argument("--out", help="output directory (default: results/<config name>[-<protocol>][-quick])")
    r.add_argument("--data-dir", help="directory holding the .mat files")
    r.add_argument("--workers", type=int, default=0, help="worker processes (0 = one per core)")
    r.add_argument("--force", action="store_true", help="recompute runs already stored")
    r.add_argument("--quick", action="store_true",
                   help="small iteration budgets and the first seed only (a few minutes)")
    r.add_argument("--no-report", action="store_true", help="do not write tables and figures")
    r.add_argument("--training-curves", action="store_true", help="also draw each run's training curves")

    rep = sub.add_parser("report", help="regenerate runs.csv, tables and figures from the store")
    rep.add_argument("--out", default=str(REPO_ROOT / "results" / "paper"), help="output directory (default: %(default)s)")
    rep.add_argument("--config", help="config whose method/dataset order the tables follow")
    rep.add_argument("--threshold", help="recompute precision/recall/F1 with this threshold policy")
    rep.add_argument("--alpha", type=float, help="recompute thresholds with this alpha")
    rep.add_argument("--training-curves", action="store_true", help="also draw each run's training curves")

    sub.add_parser("list", help="list registered methods, datasets, protocols and threshold policies")

    # Subcommands that definition modules contribute (adVAE's reference and perf, methods/advae_tools.py)
    from bench import registry

    for cmd in registry.commands().values():
        if cmd.name in sub.choices:
            continue  # a built-in command keeps its name
        cmd.add_arguments(sub.add_parser(cmd.name, help=cmd.help))
    return p


def _cmd_run(a) -> int:
    from bench import config, outputs, runner

    exp = config.load(a.config)
    exp = exp.restrict(a.methods, a.datasets, a.seeds, a.protocol)
    if a.quick and a.seeds is None:
        exp = exp.restrict(seeds=exp.seeds[:1])
    name = exp.name + (f"-{exp.protocol}" if a.protocol else "") + ("-quick" if a.quick else "")
    out = Path(a.out) if a.out else REPO_ROOT / "results" / name
    workers = a.workers if a.workers > 0 else (os.cpu_count() or 1)
    print(f"experiment {exp.name}: {len(exp.methods)} methods x {len(exp.datasets)} datasets x "
          f"{len(exp.seeds)} seeds, protocol {exp.protocol}, threshold {exp.threshold} "
          f"(alpha {exp.alpha}) -> {out}", file=sys.stderr)
    try:
        counts = runner.run_experiment(exp, out, a.data_dir, workers, a.force, a.quick)
    except KeyboardInterrupt:
        outputs.remember_order(out, exp.methods, exp.datasets)
        print(f"interrupted: finished runs are stored in {out}; run the same command again to "
              "resume", file=sys.stderr)
        return 130
    outputs.remember_order(out, exp.methods, exp.datasets)
    print(f"{counts['total']} runs: {counts['skipped']} already stored, {counts['ok']} ok, "
          f"{counts['failed']} failed, {counts['degenerate']} degenerate", file=sys.stderr)
    for line in outputs.summary_lines(out)[1:]:
        print(line, file=sys.stderr)
    if not a.no_report:
        written = outputs.build_report(out, training_curves=a.training_curves)
        print(f"wrote {len(written)} files: runs.csv, tables/, figures/ in {out}", file=sys.stderr)
    return 0


def _cmd_report(a) -> int:
    from bench import config, outputs

    order = config.load(a.config) if a.config else None
    written = outputs.build_report(a.out, a.threshold, a.alpha,
                                   order.methods if order else None,
                                   order.datasets if order else None, a.training_curves)
    for path in written:
        print(path)
    return 0


def _cmd_list(a) -> int:
    from bench import data, registry
    from bench.protocols import PROTOCOLS
    from bench.thresholds import POLICIES

    print("methods:")
    for name in registry.names():
        ent = registry.entry(name)
        print(f"  {name:12s} {ent.description}")
    print("  pyod:<Class>  any PyOD detector, e.g. pyod:COPOD or pyod:KNN[n_neighbors=10]")
    print("  (the paper's SOD row is pyod:SOD, PyOD's transductive SOD, which scores a test batch "
          "against itself; the default sod scores rows against the training rows)")
    print("datasets:")
    for name, meta in data.catalogue().items():
        print(f"  {name:12s} {meta['rows']} x {meta['features']}, {meta['anomalies']} anomalies "
              f"({meta['source'].split(' (')[0]})")
    print("protocols: " + ", ".join(PROTOCOLS))
    print("threshold policies: " + ", ".join(POLICIES))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    builtin = {"run": _cmd_run, "report": _cmd_report, "list": _cmd_list}
    if args.command in builtin:
        handler = builtin[args.command]
    else:
        from bench import registry

        handler = registry.commands()[args.command].run
    try:
        return handler(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
