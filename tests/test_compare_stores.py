"""tools/compare_stores.py: two stores compared run by run, byte for byte (the reorganisation check)."""
import numpy as np

from bench.execution.store import Store
from tests._stores import record
from tools.compare_stores import main


def _store(path, recs):
    store = Store(path, writing=True)
    try:
        for r in recs:
            store.put(r)
    finally:
        store.close()


def test_identical_stores_pass_and_one_ulp_fails(tmp_path, capsys):
    recs = [record(s, d, seed, 1.0) for s in ("a", "b") for d in ("cardio", "optdigits") for seed in (0, 1)]
    _store(tmp_path / "A", recs)
    again = [dict(r, key="other-" + r["key"]) for r in recs]  # other keys (another code digest): matched by run
    _store(tmp_path / "B", again)
    assert main([str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    assert "total: 8 runs matched, 8 bit-identical, 0 differ" in capsys.readouterr().out

    moved = [dict(r) for r in again]
    moved[3] = dict(moved[3], test_scores=np.nextafter(moved[3]["test_scores"], np.inf))  # one ulp
    _store(tmp_path / "C", moved)
    assert main([str(tmp_path / "A"), str(tmp_path / "C")]) == 1
    out = capsys.readouterr().out
    assert "7 bit-identical, 1 differ" in out and "test_scores" in out
    assert main([str(tmp_path / "A"), str(tmp_path / "C"), "--datasets", "cardio"]) == 0
