"""Datasets: the catalogue, where its files are read from, verified loading, and a user's own files.

A dataset is named in an experiment either by its catalogue name (``cardio``) or by the path of a file
of the user's own (``path/to/mine.csv``, see bench/evaluation/datafile.py); an own dataset's name in the results is
the file's stem (``mine``).
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import BenchError
from bench.evaluation import datafile

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS_DIR = REPO_ROOT / "datasets"
#: Named collections (``--datasets paper``), each with its catalogue file (datasets/collections.toml).
COLLECTIONS = DATASETS_DIR / "collections.toml"
DATA_ENV = "ADVAE_BENCH_DATA"
CHECKPOINTS_ENV = "ADVAE_BENCH_CHECKPOINTS"
#: The command-line flag that goes with each environment variable, for not-found messages.
_FLAGS = {DATA_ENV: "--data-dir", CHECKPOINTS_ENV: "--checkpoints"}


@dataclass(frozen=True)
class Dataset:
    name: str
    X: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) int64, 1 = anomaly
    sha256: str  # of the file
    info: dict

    @property
    def identity(self) -> str:
        """What a run's key hashes for its data: the file's sha256, plus the label column of a CSV file
        (the same file read with another label column is other data)."""
        col = self.info.get("label_col")
        return self.sha256 if col is None else f"{self.sha256}:label_col={col}"


def is_own(ref: str) -> bool:
    """Whether ``ref`` names a file of the user's own rather than a catalogued dataset."""
    return str(ref).lower().endswith(datafile.SUFFIXES) or "/" in str(ref) or os.sep in str(ref)


def name_of(ref: str) -> str:
    """The name a dataset reference is stored and shown under."""
    return Path(ref).stem if is_own(ref) else str(ref)


def check_ref(ref: str) -> None:
    """BenchError unless ``ref`` is a catalogued name or an own file that exists with a known type."""
    if not is_own(ref):
        info(ref)
        return
    path = Path(ref)
    if path.suffix.lower() not in datafile.SUFFIXES or not path.is_file():
        datafile.read(path)  # raises the error that says what is wrong
    if path.stem in catalogue():
        raise BenchError(f"dataset file {ref}: its name {path.stem!r} is a catalogued dataset's; rename the "
                         "file (results are stored and shown by dataset name)")


@functools.cache
def collections() -> dict[str, dict]:
    """``{collection: {"description", "catalogue", "members": [dataset names], "absent": {name: why}}}``,
    from datasets/collections.toml and the catalogue file each collection names."""
    try:
        with open(COLLECTIONS, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"cannot read the dataset collections {COLLECTIONS} ({exc})") from None
    out = {}
    for cname, spec in raw.items():
        path = DATASETS_DIR / spec["catalogue"]
        try:
            with open(path, "rb") as fh:
                tables = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise BenchError(f"cannot read the catalogue {path} of collection {cname!r} ({exc})") from None
        out[cname] = {**spec, "members": list(tables), "tables": tables,
                      "absent": dict(spec.get("absent", {}))}
    return out


@functools.cache
def catalogue() -> dict[str, dict]:
    """Every catalogued dataset, ``{name: its table}``, over all collections (names are unique)."""
    cat: dict[str, dict] = {}
    for cname, col in collections().items():
        for name, meta in col["tables"].items():
            if name in cat or name in collections():
                raise BenchError(f"dataset name {name!r} of collection {cname!r} is taken twice "
                                 "(dataset and collection names are unique)")
            cat[name] = {**meta, "collection": cname}
    return cat


def absent() -> dict[str, tuple[str, str]]:
    """Datasets a collection names but the repository does not hold: ``{name: (collection, why)}``.
    A name is matched with or without its collection's number prefix (``36_speech`` or ``speech``)."""
    out = {}
    for cname, col in collections().items():
        for name, what in col["absent"].items():
            out[name] = out[name.split("_", 1)[-1]] = (cname, what)
    return out


def expand(refs) -> list[str]:
    """Dataset references with every collection name replaced by its members (in catalogue order);
    a dataset named twice is kept once, at its first place."""
    out: list[str] = []
    for ref in refs:
        out += collections()[ref]["members"] if isinstance(ref, str) and ref in collections() else [ref]
    return list(dict.fromkeys(out))


def default_datasets() -> list[str]:
    """The datasets of an experiment that names none: the first collection of datasets/collections.toml."""
    return list(next(iter(collections().values()))["members"])


def info(name: str) -> dict:
    cat = catalogue()
    if name not in cat:
        gone = absent().get(name)
        if gone:
            cname, what = gone
            raise BenchError(f"dataset {name!r} ({what}) is one of {cname}'s datasets the repository does "
                             f"not hold (its file was not available to copy, see "
                             f"datasets/data/{cname}/SOURCES.md); to run it, download it yourself and "
                             "pass the file as your own dataset: --datasets path/to/file.npz")
        close = difflib.get_close_matches(name, [*cat, *collections()], n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        sizes = ", ".join(f"{c} ({len(col['members'])})" for c, col in collections().items())
        raise BenchError(f"unknown dataset {name!r}.{hint} Collections: {sizes}; "
                         "`python run_bench.py list` names every dataset")
    return cat[name]


def candidate_dirs(cli_dir: str | os.PathLike | None, env_var: str, repo_sub: str,
                   shared_sub: str | None = None, flag: str | None = None) -> list[tuple[str, Path]]:
    """The one place data or checkpoint files are read from, as ``[(why this place, directory)]``.

    A directory given explicitly, by the command-line flag (``cli_dir``) or else by the environment
    variable ``env_var``, is the ONLY place looked in: a file missing there is an error naming that
    directory, never a silent read from somewhere else. Without either, the repository's own copy
    (``repo_sub``) is used. ``shared_sub`` is ignored: nothing outside the repository is looked in
    unless the user points there (kept so that callers written for the older rule keep working).
    """
    flag = flag or _FLAGS.get(env_var, "the command-line flag")
    choose = f"{flag} or ${env_var} chooses the directory"
    if cli_dir not in (None, ""):
        return [(f"given by {flag}; {choose}", Path(cli_dir))]
    if os.environ.get(env_var):
        return [(f"given by ${env_var}; {choose}", Path(os.environ[env_var]))]
    return [(f"the repository's copy; {choose}", REPO_ROOT / repo_sub)]


def find_file(filename: str, dirs: list[tuple[str, Path]], what: str, source: str) -> Path:
    for _, d in dirs:
        if (d / filename).is_file():
            return d / filename
    looked = "; ".join(f"{d} ({label})" + ("" if d.is_dir() else " - no such directory")
                       for label, d in dirs)
    raise BenchError(f"{what} file {filename!r} not found in {looked}. It comes from: {source}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _load_verified(path: Path, name: str) -> Dataset:
    import scipy.io

    meta = info(name)
    digest = sha256_of(path)
    if digest != meta["sha256"]:
        raise BenchError(f"dataset {name!r}: {path} has sha256 {digest}, expected {meta['sha256']}. "
                         f"The file is corrupt or a different dataset; fetch it again from: {meta['source']}")
    try:
        if path.suffix.lower() == ".npz":  # ADBench's files: arrays X and y, no pickled objects
            with np.load(path, allow_pickle=False) as arrays:
                raw_X, raw_y = arrays["X"], arrays["y"]
        else:
            raw = scipy.io.loadmat(path)
            raw_X, raw_y = raw["X"], raw["y"]
        X = np.asarray(raw_X, dtype=np.float64)  # letter and satellite are uint8 on disk, cover int16
        y = np.asarray(raw_y).reshape(-1).astype(np.int64)  # a .mat file's y is a column vector
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise BenchError(f"dataset {name!r}: cannot read {path} ({exc})") from exc
    expect = (meta["rows"], meta["features"])
    if X.shape != expect or y.shape != (meta["rows"],) or int(y.sum()) != meta["anomalies"]:
        raise BenchError(f"dataset {name!r}: {path} holds X {X.shape}, {int(y.sum())} anomalies; "
                         f"expected X {expect}, {meta['anomalies']} anomalies")
    return Dataset(name, X, y, digest, meta)


def locate(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The file of a catalogued dataset: in ``data_dir`` (or ``$ADVAE_BENCH_DATA``) if given, else in
    the repository's ``datasets/data``. BenchError naming the place if it is not there."""
    meta = info(name)
    dirs = candidate_dirs(data_dir, DATA_ENV, "datasets/data")
    return find_file(meta["file"], dirs, f"dataset {name!r}", meta["source"])


def load(ref: str, data_dir: str | os.PathLike | None = None, label_col: str | None = None) -> Dataset:
    """Load a catalogued dataset, verified against its checksum and shape, or a file of the user's own
    (``label_col``: the label column of a CSV file)."""
    if is_own(ref):
        check_ref(ref)
        path = Path(ref).resolve()
        stat = path.stat()
        return _load_own(path, stat.st_mtime_ns, stat.st_size, label_col)
    return _load_verified(locate(ref, data_dir).resolve(), ref)


@functools.lru_cache(maxsize=16)
def _load_own(path: Path, mtime_ns: int, size: int, label_col: str | None) -> Dataset:
    X, y, facts = datafile.read(path, label_col)
    return Dataset(path.stem, X, y, sha256_of(path), {**facts, "source": f"own file {path}"})
