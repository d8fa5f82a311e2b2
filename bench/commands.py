"""What each ``python run_bench.py`` command does (``bench.cli`` parses the command line and calls
these): run, report, compare, leaderboard, show and list. Each returns the exit status and raises
BenchError for bad input.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench import BenchError
from bench.evaluation.data import REPO_ROOT
from bench.execution.store import RUNS_DIR, not_published


DEFAULT_CONFIG = REPO_ROOT / "configs" / "paper.toml"


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
                       a.label_col, a.time_limit, compile=False if a.eager else True if a.compile else None)
    if a.quick and a.seeds is None:
        exp = exp.restrict(seeds=exp.seeds[:1])
    name = (exp.name + (f"-{exp.protocol}" if exp.protocol != base.protocol else "")
            + ("-quick" if a.quick else ""))
    out = not_published(a.out) if a.out else RUNS_DIR / name
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
            runtable.remember_order(out, exp.methods, exp.dataset_names, a.quick, exp.name, exp.featured,
                                    exp.baseline)
        how = "terminated (SIGTERM)" if isinstance(exc, runner.Terminated) else "interrupted"
        print(f"{how}: finished runs are stored in {out}; run the same command again to resume",
              file=sys.stderr)
        return 143 if isinstance(exc, runner.Terminated) else 130
    runtable.remember_order(out, exp.methods, exp.dataset_names, a.quick, exp.name, exp.featured,
                                    exp.baseline)
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
    from bench.reporting import outputs

    order = config.load(a.config) if a.config else None
    published = None if a.published.lower() == "none" else a.published
    if published not in (None, "auto"):
        from bench.reporting import compare

        compare.load_published(published)  # an unknown table is bad input, as for `compare`: exit 2
    written = outputs.build_report(not_published(a.out), a.threshold, a.alpha,
                                   order.methods if order else None,
                                   order.dataset_names if order else None, a.training_curves,
                                   chosen=a.methods, published=published)
    for path in written:
        print(path)
    return 0


def _cmd_compare(a) -> int:
    from bench.reporting import compare, runtable

    pub = compare.load_published(a.published)
    runs = runtable.load_runs(a.results, policy="paper", alpha=pub.meta.get("alpha"))
    context = runtable.context_line(runs, runtable.experiment_info(a.results))
    out = not_published(Path(a.out) if a.out else Path(a.results) / "compare", "the comparison's folder")
    cmp, written = compare.run(runs, pub, out, context)
    print(f"{pub.meta.get('source', pub.name)}, {pub.meta.get('citation', '')}")
    print(context)
    for line in compare.summary_lines(cmp):
        print(line)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_leaderboard(a) -> int:
    from bench.reporting import leaderboard, runtable

    dirs = a.results or [str(RUNS_DIR / "paper")]
    if a.out:
        not_published(a.out, "the leaderboard's folder")  # before reading any store
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
    default = runtable.experiment_info(dirs[0]).get("baseline")  # the first store's config says it
    lb = leaderboard.build(runs, a.metric, a.baseline, context, default)
    out = not_published(Path(a.out) if a.out else Path(dirs[0]) / "leaderboard",  # as --help says
                        "the leaderboard's folder")
    written = leaderboard.write(lb, out)
    print(leaderboard.to_text(lb))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_show(a) -> int:
    from bench.reporting import runtable, show

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
