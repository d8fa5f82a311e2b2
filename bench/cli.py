"""Command line: ``python run_bench.py {run,report,compare,leaderboard,list,...}``; no arguments =
``run``. Further subcommands (adVAE's ``reference`` and ``perf``) come from definition modules through
``registry.register_command``."""
from __future__ import annotations

import argparse
import re
import sqlite3
import sys

from bench import BenchError, WorkError
from bench.commands import (DEFAULT_CONFIG, _cmd_run, _cmd_report, _cmd_compare, _cmd_leaderboard, _cmd_show,
                            _cmd_list)
from bench.evaluation.data import REPO_ROOT

class _UsageError(Exception):
    """A command line argparse rejects; main prints it as one ``error:`` line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message and exits; we want one line
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _names(text: str) -> list[str]:
    names = _csv(text)
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give at least one "
                                         "(`python run_bench.py list` shows them)")
    return names


_ASCII_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes '٣' and '³', which int() reads or rejects


def _seeds(text: str) -> list[int]:
    """``0,1,2``, ``0-4`` or both (``0-2,7``); a repeated seed is counted once, at most MAX_SEEDS."""
    from bench.execution.config import MAX_SEEDS
    from bench.contract.params import MAX_SEED

    bad = argparse.ArgumentTypeError(f"seeds must look like 0,1,2 or 0-4 (integers 0 to {MAX_SEED}), "
                                     f"got {text!r}")
    ranges = []
    for part in _csv(text):
        a, sep, b = part.partition("-")
        if not (_ASCII_DIGITS.fullmatch(a.strip()) and (not sep or _ASCII_DIGITS.fullmatch(b.strip()))):
            raise bad
        lo, hi = int(a), int(b) if sep else int(a)
        if lo > hi:
            raise argparse.ArgumentTypeError(f"seed range {part!r} is empty (write low-high)")
        if hi > MAX_SEED:
            raise bad
        if hi - lo + 1 > MAX_SEEDS:  # checked before the range is listed
            raise argparse.ArgumentTypeError(f"seed range {part!r} holds {hi - lo + 1} seeds; run at most "
                                             f"{MAX_SEEDS} per invocation")
        ranges.append((lo, hi))
    if not ranges:
        raise bad
    seeds = list(dict.fromkeys(s for lo, hi in ranges for s in range(lo, hi + 1)))
    if len(seeds) > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"{text!r} asks for {len(seeds)} seeds; run at most {MAX_SEEDS} "
                                         "per invocation")
    return seeds


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of worker processes >= 1, got {text!r} "
                                         "(leave --workers out for one per core)")
    return n


def _sweep(text: str):
    from bench import BenchError
    from bench.execution.config import parse_sweep

    try:
        return parse_sweep(text)
    except BenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 10**7:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _rates(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"contamination rates must look like 0,0.01,0.02, got {text!r}")


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
    out = [m for m in out if m]
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no method; give at least one spec, e.g. "
                                         "advae,ocsvm[nu=0.05] (`python run_bench.py list` shows them)")
    return out


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run_bench.py", description=(
        "advae-bench: adVAE and baselines on five tabular anomaly-detection datasets. "
        "Without arguments: run configs/paper.toml and write runs/paper/."))
    sub = p.add_subparsers(dest="command")
    plug = argparse.ArgumentParser(add_help=False)
    plug.add_argument("--plugin", action="append", default=[], metavar="FILE",
                      help="a Python file that registers methods (@register); repeatable")

    r = sub.add_parser("run", parents=[plug], help="run an experiment (skips runs already stored as ok)")
    r.add_argument("--config", help=f"experiment TOML (default: {DEFAULT_CONFIG}; with --sweep and no "
                   "--methods, only its datasets, seeds and overrides)")
    r.add_argument("--methods", type=_methods, help="comma-separated method specs, e.g. advae,ocsvm[nu=0.05]")
    r.add_argument("--datasets", type=_names,
                   help="comma-separated catalogued dataset names and/or files of your own (.mat, .npz, .csv)")
    r.add_argument("--label-col", help="label column of your own .csv files (default: y or label; 1 = anomaly)")
    r.add_argument("--seeds", type=_seeds, help="e.g. 0,1,2 or 0-4 (at most 1000; repeats count once)")
    r.add_argument("--protocol", help="paper or resample (default: the config's; resample for your own files)")
    r.add_argument("--sweep", action="append", type=_sweep, metavar="METHOD:PARAM=V1,V2,...",
                   help="sweep one parameter, e.g. advae:m_x=0.5,1,1.5 (repeatable; replaces the "
                        "config's sweeps)")
    r.add_argument("--contamination", type=_rates, metavar="R1,R2,...",
                   help="contaminated training sets at these rates, e.g. 0,0.01,0.02 (synthetic "
                        "ADASYN anomalies; protocol <protocol>+adasyn=<rate>)")
    r.add_argument("--time-limit", type=_seconds, metavar="SECONDS",
                   help="seconds a run may take (fit + scoring) before it is stopped and stored with "
                        "status timeout (default: the config's time_limit, else none)")
    r.add_argument("--out", help="output directory (default: runs/<config name>[-<protocol>][-quick]; never inside results/)")
    r.add_argument("--data-dir", help="directory holding the .mat files")
    r.add_argument("--workers", type=_workers, help="worker processes, >= 1 (default: one per core)")
    r.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="where groups run: local worker processes (default) or a Dask cluster")
    r.add_argument("--scheduler", metavar="ADDRESS", help="with --executor dask: an existing cluster's "
                   "scheduler, e.g. tcp://host:8786 (default: a LocalCluster of --workers processes)")
    r.add_argument("--force", action="store_true", help="recompute runs already stored")
    paths = r.add_mutually_exclusive_group()
    paths.add_argument("--compile", action="store_true",
                       help="compiled training steps for every method with a `compile` parameter (the config's "
                            "`compile = true`; they round differently from eager ones: other run keys)")
    paths.add_argument("--eager", action="store_true", help="train every method eagerly (`compile = false`)")
    r.add_argument("--quick", action="store_true",
                   help="small iteration budgets and the first seed only (a few minutes)")
    r.add_argument("--no-report", action="store_true", help="do not write tables and figures")
    r.add_argument("--training-curves", action="store_true", help="also draw each run's training curves")

    rep = sub.add_parser("report", parents=[plug], help="regenerate runs.csv, tables, figures, the "
                         "reproduction report, the leaderboard and index.html from the store")
    rep.add_argument("--out", default=str(REPO_ROOT / "runs" / "paper"), help="output directory (default: %(default)s)")
    rep.add_argument("--config", help="config whose method/dataset order the tables follow")
    rep.add_argument("--threshold", help="recompute precision/recall/F1 with this threshold policy "
                     "(written beside the default tables, in tables/<policy>/)")
    rep.add_argument("--alpha", type=float, help="recompute thresholds with this alpha")
    rep.add_argument("--training-curves", action="store_true", help="also draw each run's training curves")
    rep.add_argument("--methods", type=_methods, help="methods the curve figures feature (default: the "
                     "adVAE family and the best few others)")
    rep.add_argument("--published", default="auto", help="published table the reproduction report "
                     "compares with ('none' for no reproduction report; default: the one published "
                     "under the runs' protocol, e.g. wang2020-kbs for paper, adbench2022 for adbench)")

    cmp = sub.add_parser("compare", parents=[plug], help="reproduction report: the store against a "
                         "paper's published table")
    cmp.add_argument("--results", default=str(REPO_ROOT / "runs" / "paper"),
                     help="result directory (default: %(default)s)")
    cmp.add_argument("--published", default="wang2020-kbs",
                     help="published table in published/ (default: %(default)s)")
    cmp.add_argument("--out", help="where to write compare-<published>.{csv,md} and figures "
                     "(default: <results>/compare)")

    sh = sub.add_parser("show", help="print a store's numbers: one method's AUC, AP, recall and F1 per seed "
                        "and per dataset, or (no METHOD) every method's summary")
    sh.add_argument("method", nargs="?", help="a spec or a method name (every spec of it), e.g. advae")
    sh.add_argument("--results", default=str(REPO_ROOT / "runs" / "paper"),
                    help="result directory (default: %(default)s)")
    sh.add_argument("--threshold", help="recall and F1 under this threshold policy (default: the stored one)")
    sh.add_argument("--alpha", type=float, help="recall and F1 with this alpha (default: the stored one)")

    lst = sub.add_parser("list", parents=[plug], help="list methods, datasets (and where they were found), protocols and "
                                      "threshold policies; `list METHOD` shows a method's parameters")
    lst.add_argument("method", nargs="?", help="a method or spec, e.g. advae, ocsvm[nu=0.05] or pyod:KNN")
    lst.add_argument("--data-dir", help="directory holding the .mat files (default: the repository's)")

    lb = sub.add_parser("leaderboard", parents=[plug], help="rank methods over one or several stores, "
                        "with Friedman, Nemenyi and Wilcoxon-Holm tests")
    lb.add_argument("--results", nargs="+", action="extend", metavar="DIR",
                    help="result directories to merge (default: runs/paper)")
    lb.add_argument("--metric", default="auc", choices=["auc", "ap", "f1"], help="default: %(default)s")
    lb.add_argument("--baseline", help="spec that wins/ties/losses count against (default: the config's baseline if "
                    "ranked, else the first)")
    lb.add_argument("--threshold", help="threshold policy for f1 (default: the stored one)")
    lb.add_argument("--protocol", help="rank the runs of this protocol (needed when the stores hold "
                    "several)")
    lb.add_argument("--out", help="where to write leaderboard-<metric>.*, cd-<metric>.png/svg and "
                    "wilcoxon-<metric>.csv (default: <results>/leaderboard of the first --results DIR)")

    # Subcommands contributed from outside the plumbing (tools/commands/: perf, reference)
    from bench.contract import registry

    for cmd in registry.commands().values():
        if cmd.name in sub.choices:
            continue  # a built-in command keeps its name
        cmd.add_arguments(sub.add_parser(cmd.name, help=cmd.help))
    return p


def _load_plugins(a) -> None:
    from bench.contract import registry

    for path in getattr(a, "plugin", []) or []:
        names = registry.load_plugin(path)
        print(f"plugin {path}: {', '.join(names)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]
    try:
        parser = _parser()  # imports the method definitions (torch): a Ctrl-C here is an interrupt too
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.command is None:
        parser.print_help()
        return 2
    builtin = {"run": _cmd_run, "report": _cmd_report, "compare": _cmd_compare,
               "leaderboard": _cmd_leaderboard, "list": _cmd_list, "show": _cmd_show}
    if args.command in builtin:
        handler = builtin[args.command]
    else:
        from bench.contract import registry

        handler = registry.commands()[args.command].run
    try:
        _load_plugins(args)
        return handler(args)
    except KeyboardInterrupt:  # `run` handles its own; this is any other moment or command
        print("interrupted", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:  # during the work (disk full, file vanished...): status 1
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)  # (run says what it stored)
        return 1
