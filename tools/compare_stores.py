"""Are two stores' scores the same, run by run? (e.g. the default experiment before and after a
refactor that must not change a single score.)

    python tools/compare_stores.py STORE_A STORE_B [--datasets cardio,optdigits]

Runs are matched by (spec, dataset and its checksum, protocol, seed), not by key: a refactor may change
the code digest in the key without changing what is computed. For each matched pair the stored training
and test scores are compared byte for byte (bit identity; NaN equals NaN only at the same place), and
the status must agree. Prints one line per method and a total; exit status 0 when every matched run
is identical and both stores hold the same runs, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench.execution.store import Store  # noqa: E402

MATCH = ["spec", "dataset", "dataset_sha256", "protocol", "seed"]


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def compare(dir_a, dir_b, datasets=None):
    """(rows, only_a, only_b): rows of (spec, dataset, protocol, seed, identical, why)."""
    frames = []
    for d in (dir_a, dir_b):
        store = Store(d)
        try:
            df = store.latest(with_blobs=True)
        finally:
            store.close()
        if datasets:
            df = df[df.dataset.isin(datasets)]
        frames.append(df.set_index(MATCH))
    a, b = frames
    common = a.index.intersection(b.index)
    rows = []
    for idx in common:
        ra, rb = a.loc[idx], b.loc[idx]
        why = []
        if ra.status != rb.status:
            why.append(f"status {ra.status} / {rb.status}")
        for col in ("train_scores", "test_scores"):
            if not _same(ra[col], rb[col]):
                why.append(col)
        rows.append((*idx[:1], idx[1], idx[3], int(idx[4]), not why, ", ".join(why)))
    return rows, a.index.difference(b.index), b.index.difference(a.index)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store_a")
    p.add_argument("store_b")
    p.add_argument("--datasets", help="comma-separated dataset names (default: every dataset)")
    a = p.parse_args(argv)
    rows, only_a, only_b = compare(a.store_a, a.store_b, a.datasets.split(",") if a.datasets else None)
    by_spec: dict[str, list] = {}
    for spec, dataset, protocol, seed, same, why in rows:
        by_spec.setdefault(spec, []).append((dataset, seed, same, why))
    for spec, items in by_spec.items():
        bad = [f"{d} seed {s}: {w}" for d, s, same, w in items if not same]
        print(f"{spec:<28} {len(items):>4} runs  {len(items) - len(bad):>4} bit-identical"
              + (f"  DIFFER: {'; '.join(bad[:3])}" if bad else ""))
    n_same = sum(r[4] for r in rows)
    print(f"total: {len(rows)} runs matched, {n_same} bit-identical, {len(rows) - n_same} differ; "
          f"{len(only_a)} only in {a.store_a}, {len(only_b)} only in {a.store_b}")
    return 0 if n_same == len(rows) and not len(only_a) and not len(only_b) else 1


if __name__ == "__main__":
    sys.exit(main())
