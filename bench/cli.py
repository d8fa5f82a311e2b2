"""Command line: ``python run_bench.py {run,report,list,reference,perf}``; no arguments = ``run``."""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path

from bench import BenchError, WorkError
from bench.data import REPO_ROOT

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


def _seeds(text: str) -> list[int]:
    """``0,1,2``, ``0-4`` or both (``0-2,7``); a repeated seed is counted once, at most MAX_SEEDS."""
    from bench.config import MAX_SEEDS
    from bench.params import MAX_SEED

    bad = argparse.ArgumentTypeError(f"seeds must look like 0,1,2 or 0-4 (integers 0 to {MAX_SEED}), "
                                     f"got {text!r}")
    ranges = []
    for part in _csv(text):
        a, sep, b = part.partition("-")
        if not (a.strip().isdigit() and (not sep or b.strip().isdigit())):
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

    r = sub.add_parser("run", help="run an experiment (skips runs already stored as ok)")
    r.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment TOML (default: %(default)s)")
    r.add_argument("--methods", type=_methods, help="comma-separated method specs, e.g. advae,ocsvm[nu=0.05]")
    r.add_argument("--datasets", type=_names,
                   help="comma-separated catalogued dataset names and/or files of your own (.mat, .npz, .csv)")
    r.add_argument("--label-col", help="label column of your own .csv files (default: y or label; 1 = anomaly)")
    r.add_argument("--seeds", type=_seeds, help="e.g. 0,1,2 or 0-4 (at most 1000; repeats count once)")
    r.add_argument("--protocol", help="paper or resample (default: the config's; resample for your own files)")
    r.add_argument("--out", help="output directory (default: results/<config name>[-<protocol>][-quick])")
    r.add_argument("--data-dir", help="directory holding the .mat files")
    r.add_argument("--workers", type=_workers, help="worker processes, >= 1 (default: one per core)")
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

    lst = sub.add_parser("list", help="list methods, datasets (and where they were found), protocols and "
                                      "threshold policies; `list METHOD` shows a method's parameters")
    lst.add_argument("method", nargs="?", help="a method or spec, e.g. advae, ocsvm[nu=0.05] or pyod:KNN")
    lst.add_argument("--data-dir", help="directory holding the .mat files (default: the repository's)")

    ref = sub.add_parser("reference", help="score the adVAE authors' released weights (check of the evaluation path)")
    ref.add_argument("--out", default=str(REPO_ROOT / "results" / "reference"), help="output directory (default: %(default)s)")
    ref.add_argument("--checkpoints", help="directory holding <dataset>-encoder.pt / -decoder.pt")
    ref.add_argument("--data-dir", help="directory holding the .mat files")
    ref.add_argument("--L", type=int, default=1000, help="latent samples per row (default: %(default)s)")

    perf = sub.add_parser("perf", help="time adVAE training iterations and L-sample scoring")
    perf.add_argument("--datasets", type=_names, help="comma-separated dataset names (default: all)")
    perf.add_argument("--n-iter", type=int, default=200, help="iterations to time (default: %(default)s)")
    perf.add_argument("--L", type=int, default=1000, help="latent samples per row (default: %(default)s)")
    perf.add_argument("--data-dir", help="directory holding the .mat files")
    return p


def _cmd_run(a) -> int:
    from bench import config, outputs, runner

    base = config.load(a.config)
    protocol = a.protocol
    if protocol is None and a.datasets and base.protocol != config.default_protocol(a.datasets):
        protocol = config.default_protocol(a.datasets)  # own files have no paper split: resample
        print(f"note: protocol {protocol} (the paper protocol is defined for the catalogued datasets "
              "only)", file=sys.stderr)
    exp = base.restrict(a.methods, a.datasets, a.seeds, protocol, a.label_col)
    if a.quick and a.seeds is None:
        exp = exp.restrict(seeds=exp.seeds[:1])
    name = (exp.name + (f"-{exp.protocol}" if exp.protocol != base.protocol else "")
            + ("-quick" if a.quick else ""))
    out = Path(a.out) if a.out else REPO_ROOT / "results" / name
    workers = a.workers or os.cpu_count() or 1
    print(f"experiment {exp.name}: {len(exp.methods)} methods x {len(exp.datasets)} datasets x "
          f"{len(exp.seeds)} seeds, protocol {exp.protocol}, threshold {exp.threshold} "
          f"(alpha {exp.alpha}) -> {out}", file=sys.stderr)
    try:
        with runner.sigterm_as_interrupt():
            counts = runner.run_experiment(exp, out, a.data_dir, workers, a.force, a.quick)
    except KeyboardInterrupt as exc:
        if (out / "runs.sqlite").is_file():
            outputs.remember_order(out, exp.methods, exp.dataset_names)
        how = "terminated (SIGTERM)" if isinstance(exc, runner.Terminated) else "interrupted"
        print(f"{how}: finished runs are stored in {out}; run the same command again to resume",
              file=sys.stderr)
        return 143 if isinstance(exc, runner.Terminated) else 130
    outputs.remember_order(out, exp.methods, exp.dataset_names)
    # The summary is this invocation's: failures an earlier run left in the store are not repeated.
    print(f"{counts['total']} runs: {counts['skipped']} already stored, {counts['ok']} ok, "
          f"{counts['failed']} failed, {counts['degenerate']} degenerate", file=sys.stderr)
    for line in outputs.summary_lines(out, counts["keys"])[1:]:
        print(line, file=sys.stderr)
    if not a.no_report:
        written = outputs.build_report(out, training_curves=a.training_curves)
        print(f"wrote {len(written)} files: runs.csv, tables/, figures/ in {out}", file=sys.stderr)
    if counts["failed"]:
        print(f"{counts['failed']} runs failed (listed above, errors in runs.csv): exit status 1",
              file=sys.stderr)
        return 1
    return 0


def _cmd_report(a) -> int:
    from bench import config, outputs

    order = config.load(a.config) if a.config else None
    written = outputs.build_report(a.out, a.threshold, a.alpha,
                                   order.methods if order else None,
                                   order.dataset_names if order else None, a.training_curves)
    for path in written:
        print(path)
    return 0


def _cmd_list(a) -> int:
    if a.method:
        return _list_method(a.method)
    from bench import data, registry
    from bench.protocols import PROTOCOLS
    from bench.thresholds import POLICIES

    print("methods (`list METHOD` shows its parameters):")
    for name in registry.names():
        print(f"  {name:12s} {registry.entry(name).description}")
    print("  pyod:<Class>  any PyOD detector, e.g. pyod:COPOD or pyod:KNN[n_neighbors=10]")
    print("  (the paper's SOD row is pyod:SOD, PyOD's transductive SOD, which scores a test batch "
          "against itself; the default sod scores rows against the training rows)")
    ((why, where),) = data.candidate_dirs(a.data_dir, data.DATA_ENV, "datasets/data")
    print(f"datasets (read from {where}: {why}; or a .mat/.npz/.csv file of your own):")
    for name, meta in data.catalogue().items():
        print(f"  {name:12s} {meta['rows']} x {meta['features']}, {meta['anomalies']} anomalies "
              f"({meta['source'].split(' (')[0]}): {_found(name, a.data_dir)}")
    print("protocols: " + ", ".join(PROTOCOLS))
    print("threshold policies: " + ", ".join(POLICIES))
    return 0


def _found(name: str, data_dir) -> str:
    from bench import data

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

    from bench import registry
    from bench.params import describe

    name, given = registry.parse_spec(spec)
    ent = registry.entry(name)
    det, _, shown = registry.build(spec)
    if ent.make is not None:  # a namespaced adapter (pyod:): the library class's own parameters
        shown = {**det._make().get_params(deep=False), **(det.params or {})}
    print(f"{name}: {ent.description}")
    print(f"  defined in {inspect.getsourcefile(ent.cls)} ({ent.cls.__name__}, version "
          f"{getattr(ent.cls, 'version', '1')})")
    print("  parameters (value in this spec; what it accepts):")
    width = max([len(k) for k in shown] or [0])
    for key, value in shown.items():
        allowed = ent.cls.parameter_constraints.get(key) if ent.make is None else None
        origin = (" (this spec)" if key in given else
                  f" (fixed by {name})" if key in ent.defaults else "")
        accepts = f"; {describe(allowed)}" if allowed else ""
        print(f"    {key:{width}s} = {value!r}{origin}{accepts}")
    if getattr(ent.cls, "quick_params", None):
        print("  --quick: " + ", ".join(f"{k}={v!r}" for k, v in ent.cls.quick_params.items()))
    if getattr(ent.cls, "max_group_size", 1) > 1:
        print(f"  up to {ent.cls.max_group_size} seeds train together as one stack")
    return 0


def _cmd_reference(a) -> int:
    from bench.reference import run_reference
    from bench.store import writable_dir

    writable_dir(a.out)  # before minutes of scoring, not after

    df = run_reference(a.out, data_dir=a.data_dir, checkpoints_dir=a.checkpoints, L=a.L)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {Path(a.out) / 'reference.csv'} and reference.md", file=sys.stderr)
    return 0


def _cmd_perf(a) -> int:
    from bench.perf import run_perf

    run_perf(datasets=a.datasets, n_iter=a.n_iter, L=a.L, data_dir=a.data_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command is None:
        _parser().print_help()
        return 2
    handler = {"run": _cmd_run, "report": _cmd_report, "list": _cmd_list,
               "reference": _cmd_reference, "perf": _cmd_perf}[args.command]
    try:
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
        print(f"error: {type(exc).__name__}: {exc}{where}; results computed so far are stored",
              file=sys.stderr)
        return 1
