"""Dataset catalogue, data-directory resolution and verified loading."""
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

REPO_ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = REPO_ROOT / "datasets" / "catalogue.toml"
DATA_ENV = "ADVAE_BENCH_DATA"


@dataclass(frozen=True)
class Dataset:
    name: str
    X: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) int64, 1 = anomaly
    sha256: str
    info: dict


@functools.cache
def catalogue() -> dict[str, dict]:
    with open(CATALOGUE, "rb") as fh:
        return tomllib.load(fh)


def info(name: str) -> dict:
    cat = catalogue()
    if name not in cat:
        close = difflib.get_close_matches(name, list(cat), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise BenchError(f"unknown dataset {name!r}.{hint} Known: {', '.join(sorted(cat))}")
    return cat[name]


def candidate_dirs(cli_dir: str | os.PathLike | None, env_var: str, repo_sub: str,
                   shared_sub: str) -> list[tuple[str, Path]]:
    """The lookup order used for data and checkpoints: CLI flag, environment variable, a folder in
    the repository, then ``../shared/<shared_sub>`` beside the repository."""
    out = []
    if cli_dir:
        out.append(("command line", Path(cli_dir)))
    if os.environ.get(env_var):
        out.append((f"${env_var}", Path(os.environ[env_var])))
    out.append(("repository", REPO_ROOT / repo_sub))
    out.append(("beside the repository", REPO_ROOT.parent / "shared" / shared_sub))
    return out


def find_file(filename: str, dirs: list[tuple[str, Path]], what: str, source: str) -> Path:
    for _, d in dirs:
        if (d / filename).is_file():
            return d / filename
    looked = "; ".join(f"{d} ({label})" for label, d in dirs)
    raise BenchError(f"{what} file {filename!r} not found. Looked in: {looked}. "
                     f"It comes from: {source}")


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
        mat = scipy.io.loadmat(path)
        X = np.asarray(mat["X"], dtype=np.float64)  # letter and satellite are uint8 on disk
        y = np.asarray(mat["y"]).reshape(-1).astype(np.int64)  # y is a column vector
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise BenchError(f"dataset {name!r}: cannot read {path} ({exc})") from exc
    expect = (meta["rows"], meta["features"])
    if X.shape != expect or y.shape != (meta["rows"],) or int(y.sum()) != meta["anomalies"]:
        raise BenchError(f"dataset {name!r}: {path} holds X {X.shape}, {int(y.sum())} anomalies; "
                         f"expected X {expect}, {meta['anomalies']} anomalies")
    return Dataset(name, X, y, digest, meta)


def load(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a catalogued dataset, verified against its checksum and shape."""
    meta = info(name)
    dirs = candidate_dirs(data_dir, DATA_ENV, "datasets/data", "datasets")
    path = find_file(meta["file"], dirs, f"dataset {name!r}", meta["source"])
    return _load_verified(path.resolve(), name)
