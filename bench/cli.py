"""Command line: ``python run_bench.py {run,report,compare,leaderboard,list,...}``; no arguments =
``run``. Further subcommands (adVAE's ``reference`` and ``perf``) come from definition modules through
``registry.register_command``."""
from __future__ import annotations

import argparse
import re
import sqlite3
import sys
from pathlib import Path

from bench import BenchError, WorkError
from bench.evaluation.data import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "configs" / "paper.toml"


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
        "Without arguments: run configs/paper.toml and write results/paper/."))
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
    r.add_argument("--out", help="output directory (default: results/<config name>[-<protocol>][-quick])")
    r.add_argument("--data-dir", help="directory holding the .mat files")
    r.add_argument("--workers", type=_workers, help="worker processes, >= 1 (default: one per core)")
    r.add_argument("--executor", choices=["local", "dask"], default="local",
                   help="where groups run: local worker processes (default) or a Dask cluster")
    r.add_argument("--scheduler", metavar="ADDRESS", help="with --executor dask: an existing cluster's "
                   "scheduler, e.g. tcp://host:8786 (default: a LocalCluster of --workers processes)")
    r.add_argument("--force", action="store_true", help="recompute runs already stored")
    r.add_argument("--quick", action="store_true",
                   help="small iteration budgets and the first seed only (a few minutes)")
    r.add_argument("--no-report", action="store_true", help="do not write tables and figures")
    r.add_argument("--training-curves", action="store_true", help="also draw each run's training curves")

    rep = sub.add_parser("report", parents=[plug], help="regenerate runs.csv, tables, figures, the "
                         "reproduction report, the leaderboard and index.html from the store")
    rep.add_argument("--out", default=str(REPO_ROOT / "results" / "paper"), help="output directory (default: %(default)s)")
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
    cmp.add_argument("--results", default=str(REPO_ROOT / "results" / "paper"),
                     help="result directory (default: %(default)s)")
    cmp.add_argument("--published", default="wang2020-kbs",
                     help="published table in published/ (default: %(default)s)")
    cmp.add_argument("--out", help="where to write compare-<published>.{csv,md} and figures "
                     "(default: <results>/compare)")

    sh = sub.add_parser("show", help="print a store's numbers: one method's AUC, AP, recall and F1 per seed "
                        "and per dataset, or (no METHOD) every method's summary")
    sh.add_argument("method", nargs="?", help="a spec or a method name (every spec of it), e.g. advae")
    sh.add_argument("--results", default=str(REPO_ROOT / "results" / "paper"),
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
                    help="result directories to merge (default: results/paper)")
    lb.add_argument("--metric", default="auc", choices=["auc", "ap", "f1"], help="default: %(default)s")
    lb.add_argument("--baseline", help="spec that wins/ties/losses count against (default: advae if "
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


def _cmd_run(a) -> int:
    from bench.execution import config, executors, progress, runner
    from bench.reporting import outputs, runtable

    base = config.load(a.config or DEFAULT_CONFIG)
    methods = a.methods
    if a.sweep and a.config is None and methods is None:
        methods = []  # the sweep alone, not added to the default roster
        print(f"note: --sweep without --config or --methods runs the sweep alone, with the datasets, seeds "
              f"and overrides of {DEFAULT_CONFIG.relative_to(REPO_ROOT)}", file=sys.stderr)
    protocol = a.protocol
    if protocol is None and a.datasets and base.protocol == "paper" \
            and config.default_protocol(a.datasets) != "paper":
        protocol = config.default_protocol(a.datasets)  # own files have no paper split: resample
        print(f"note: protocol {protocol} (the paper protocol is defined for the catalogued datasets "
              "only)", file=sys.stderr)
    exp = base.restrict(methods, a.datasets, a.seeds, protocol, a.sweep, a.contamination,
                       a.label_col, a.time_limit)
    if a.quick and a.seeds is None:
        exp = exp.restrict(seeds=exp.seeds[:1])
    name = (exp.name + (f"-{exp.protocol}" if exp.protocol != base.protocol else "")
            + ("-quick" if a.quick else ""))
    out = Path(a.out) if a.out else REPO_ROOT / "results" / name
    workers = executors.check_workers(a.workers, a.scheduler)  # cores and memory bound it, every executor
    executor = executors.make(a.executor, workers, a.scheduler)
    print(f"experiment {exp.name}: {plural(len(exp.methods), 'method')} x "
          f"{plural(len(exp.datasets), 'dataset')} x {plural(len(exp.seeds), 'seed')}, protocol "
          f"{exp.protocol}, threshold {exp.threshold} (alpha {exp.alpha}) -> {out}", file=sys.stderr)
    try:
        with runner.sigterm_as_interrupt():
            try:
                executor.start()  # a scheduler that does not answer: one error line, before any work
                counts = runner.run_experiment(exp, out, a.data_dir, workers, a.force, a.quick,
                                               executor=executor)
            finally:
                executor.close()
    except KeyboardInterrupt as exc:
        if (out / "runs.sqlite").is_file():
            runtable.remember_order(out, exp.methods, exp.dataset_names, a.quick, exp.name)
        how = "terminated (SIGTERM)" if isinstance(exc, runner.Terminated) else "interrupted"
        print(f"{how}: finished runs are stored in {out}; run the same command again to resume",
              file=sys.stderr)
        return 143 if isinstance(exc, runner.Terminated) else 130
    runtable.remember_order(out, exp.methods, exp.dataset_names, a.quick, exp.name)
    # The summary (stdout; progress and notes went to stderr) is this invocation's: failures an
    # earlier run left in the store are not repeated.
    print(f"{plural(counts['total'], 'run')}: {counts['skipped']} already stored, {counts['ok']} ok, "
          f"{counts['failed']} failed, {counts['degenerate']} degenerate"
          + (f", {counts['timeout']} over the time limit of {exp.time_limit:g} s (status timeout)"
             if counts.get("timeout") else ""))
    if counts["total"] > counts["skipped"]:
        print(progress.utilisation_line(counts["utilisation"]))
    for line in outputs.summary_lines(out, counts["keys"])[1:]:
        print(line)
    if not a.no_report:
        written = outputs.build_report(out, training_curves=a.training_curves)
        print(f"wrote {plural(len(written), 'file')} in {out}: {_written_parts(out, written)}")
    if counts["failed"]:
        print(f"{plural(counts['failed'], 'run')} failed (listed above, errors in runs.csv): exit status 1",
              file=sys.stderr)
        return 1
    return 0


def plural(n: int, word: str) -> str:
    """``plural(1, "method")`` -> ``1 method``; ``plural(2, "method")`` -> ``2 methods``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _written_parts(out: Path, written: list[Path]) -> str:
    """What a report wrote, by its top-level entries (``runs.csv, tables/, ...``): only those."""
    parts = []
    for p in written:
        rel = Path(p).relative_to(out).parts
        parts.append(rel[0] + ("/" if len(rel) > 1 else ""))
    return ", ".join(dict.fromkeys(parts))


def _cmd_report(a) -> int:
    from bench.execution import config
    from bench.reporting import outputs, runtable

    order = config.load(a.config) if a.config else None
    published = None if a.published.lower() == "none" else a.published
    if published not in (None, "auto"):
        from bench.reporting import compare

        compare.load_published(published)  # an unknown table is bad input, as for `compare`: exit 2
    written = outputs.build_report(a.out, a.threshold, a.alpha,
                                   order.methods if order else None,
                                   order.dataset_names if order else None, a.training_curves,
                                   chosen=a.methods, published=published)
    for path in written:
        print(path)
    return 0


def _cmd_compare(a) -> int:
    from bench.reporting import compare, outputs, runtable

    pub = compare.load_published(a.published)
    runs = runtable.load_runs(a.results, policy="paper", alpha=pub.meta.get("alpha"))
    context = runtable.context_line(runs, runtable.experiment_info(a.results))
    out = Path(a.out) if a.out else Path(a.results) / "compare"
    cmp, written = compare.run(runs, pub, out, context)
    print(f"{pub.meta.get('source', pub.name)}, {pub.meta.get('citation', '')}")
    print(context)
    for line in compare.summary_lines(cmp):
        print(line)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_leaderboard(a) -> int:
    from bench.reporting import leaderboard, outputs, runtable

    dirs = a.results or [str(REPO_ROOT / "results" / "paper")]
    seen: dict[Path, str] = {}
    for d in dirs:
        if Path(d).resolve() in seen:
            raise BenchError(f"--results names one directory twice ({seen[Path(d).resolve()]} and {d}); "
                             "give each result directory once")
        seen[Path(d).resolve()] = d
    frames = {d: runtable.load_runs(d, a.threshold, with_blobs=a.metric == "f1") for d in dirs}
    runs = leaderboard.merge(frames, a.protocol)
    if a.metric == "f1":
        pol = set(runs.loc[runs.status == "ok", "threshold_policy"])
        if len(pol) > 1:
            raise BenchError(f"the stores' F1 values come from different threshold policies "
                             f"({', '.join(sorted(pol))}); choose one with --threshold")
    info = runtable.experiment_info(dirs[0]) if len(dirs) == 1 else {}
    if len(dirs) > 1:
        quick = [runtable.experiment_info(d).get("quick") for d in dirs]
        info = {"quick": any(quick)} if None not in quick else {}
    context = runtable.context_line(runs, info)
    lb = leaderboard.build(runs, a.metric, a.baseline, context)
    out = Path(a.out) if a.out else Path(dirs[0]) / "leaderboard"  # as --help says
    written = leaderboard.write(lb, out)
    print(leaderboard.to_text(lb))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_show(a) -> int:
    from bench.reporting import outputs, runtable, show

    runs = runtable.load_runs(a.results, a.threshold, a.alpha,
                             with_blobs=a.threshold is not None or a.alpha is not None)
    context = f"{a.results}: " + runtable.context_line(runs, runtable.experiment_info(a.results))
    print(show.text(runs, context, a.method), end="")
    return 0


def _cmd_list(a) -> int:
    if a.method:
        return _list_method(a.method)
    from bench.evaluation import data
    from bench.contract import registry
    from bench.evaluation.protocols import DESCRIPTIONS, PROTOCOLS
    from bench.evaluation.thresholds import FAMILIES, POLICIES

    print("methods (`list METHOD` shows its parameters):")
    for name in registry.names():
        print(f"  {name:12s} {registry.entry(name).description}")
    print("  pyod:<Class>  any PyOD detector, e.g. pyod:COPOD or pyod:KNN[n_neighbors=10]")
    print("  (the paper's SOD row is pyod:SOD, PyOD's transductive SOD, which scores a test batch "
          "against itself; the default sod scores rows against the training rows)")
    ((why, where),) = data.candidate_dirs(a.data_dir, data.DATA_ENV, "datasets/data")
    print(f"datasets (read from {where}: {why}; or a .mat/.npz/.csv file of your own), by collection "
          "(`--datasets NAME` runs a whole collection):")
    cat = data.catalogue()
    width = max(map(len, cat))
    for cname, col in data.collections().items():
        print(f"  {cname} ({len(col['members'])} datasets): {col['description']}")
        for name in col["members"]:
            meta = cat[name]
            print(f"    {name:{width}s} {meta['rows']} x {meta['features']}, {meta['anomalies']} anomalies "
                  f"({meta['source'].split(' (')[0]}): {_found(name, a.data_dir)}")
        if col["absent"]:
            print(f"    not in the repository: {', '.join(col['absent'])} (run them as your own files)")
    print("protocols:")
    for name in PROTOCOLS:
        print(f"  {name:9s} {DESCRIPTIONS.get(name, '')}")
    print("threshold policies: " + ", ".join(POLICIES) + " (paper: "
          + ", ".join(f"{pol} for the {fam} family" for fam, pol in FAMILIES.items()) + ")")
    return 0


def _found(name: str, data_dir) -> str:
    from bench.evaluation import data

    try:
        path = data.locate(name, data_dir)
    except BenchError:
        return "NOT FOUND there"
    if data.sha256_of(path) != data.info(name)["sha256"]:
        return f"{path} has the WRONG sha256 (corrupt or another file)"
    return f"found {path}"


def _list_method(spec: str) -> int:
    """One method: description, where it is defined, parameters with defaults and accepted values."""
    import inspect

    from bench.contract import registry
    from bench.contract.params import describe

    name, given = registry.parse_spec(spec)
    ent = registry.entry(name)
    det, _, shown = registry.build(spec)
    if ent.make is not None:  # a namespaced adapter (pyod:): the library class's own parameters
        shown = {**det._make().get_params(deep=False), **(det.params or {})}
    print(f"{name}: {ent.description}")
    print(f"  defined in {inspect.getsourcefile(ent.cls)} ({ent.cls.__name__}, {_version_text(ent.cls)})")
    if not shown:
        print("  parameters: none")
    else:
        print("  parameters (value in this spec; what it accepts):")
    if shown and ent.make is None and not ent.cls.parameter_constraints:
        print(f"  ({name} declares no parameter_constraints: a value it does not take is found only "
              "inside fit and fails its runs, instead of being refused before any work)")
    width = max([len(k) for k in shown] or [0])
    for key, value in shown.items():
        allowed = ent.cls.parameter_constraints.get(key) if ent.make is None else None
        origin = (" (this spec)" if key in given else
                  f" (fixed by {name})" if key in ent.defaults else "")
        accepts = f"; {describe(allowed)}" if allowed else ""
        print(f"    {key:{width}s} = {value!r}{origin}{accepts}")
    if getattr(ent.cls, "sizing", None):
        print(f"  network sizes: {ent.cls.sizing}")
    if getattr(ent.cls, "quick_params", None):
        print("  --quick: " + ", ".join(f"{k}={v!r}" for k, v in ent.cls.quick_params.items()))
    if getattr(ent.cls, "max_group_size", 1) > 1:
        free = tuple(getattr(ent.cls, "member_params", ()) or ())
        what = f"runs (seeds and settings of {', '.join(free)})" if free else "seeds"
        print(f"  up to {ent.cls.max_group_size} {what} train together as one stack")
    return 0


def _version_text(cls: type) -> str:
    """``version 3`` when the method (not the Detector base class) declares one."""
    from bench.contract.base import Detector

    owner = next((c for c in cls.__mro__ if "version" in vars(c)), None)
    if owner is None or owner is Detector:
        return "no version declared"
    return f"version {cls.version}"


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
