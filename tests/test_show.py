"""`show`: one method's AUC, AP, recall and F1 per seed and per dataset, or every method's summary, in
the terminal (no need to open runs.csv)."""
import pytest

from _stores import make_store, record
from bench.cli import main
from bench.execution.store import Store


@pytest.fixture
def store(tmp_path):
    make_store(tmp_path, {(m, d): s for m, s in (("lof", 1.0), ("hbos[n_bins=5]", 2.0))
                          for d in ("letter", "cardio")}, seeds=(0, 1, 2))
    st = Store(tmp_path)
    st.put({**record("lof", "letter", 3, 0.0, status="failed"), "error": "ValueError: boom"})
    st.close()
    return tmp_path


def _rows(text: str, header: str) -> list[list[str]]:
    """The whitespace-split rows of the table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [header])
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_show_a_method_per_seed_and_per_dataset(store, capsys):
    assert main(["show", "lof", "--results", str(store)]) == 0
    out = capsys.readouterr().out
    runs = Store(store).latest()
    lof = runs[(runs.spec == "lof") & (runs.status == "ok")]
    per_seed = _rows(out, "dataset")
    assert [r[:4] for r in per_seed] == [["cardio", "paper", str(s), "ok"] for s in (0, 1, 2)] + \
        [["letter", "paper", str(s), "ok"] for s in (0, 1, 2)] + [["letter", "paper", "3", "failed"]]
    first = lof[(lof.dataset == "cardio") & (lof.seed == 0)].iloc[0]
    assert per_seed[0][4:] == [f"{first[m]:.3f}" for m in ("auc", "ap", "recall", "f1")]
    assert per_seed[-1][4:] == ["-", "-", "-", "-", "ValueError:", "boom"]
    summary = out.split("lof: mean +- std over seeds (ok runs)\n")[1]
    letter = lof[lof.dataset == "letter"]
    row = summary.splitlines()[1].split()
    assert row[:3] == ["letter", "paper", "3"]
    assert row[3:6] == [f"{letter.auc.mean():.3f}", "+-", f"{letter.auc.std(ddof=1):.3f}"]
    assert "Protocol paper; seeds 0-3; threshold kde, alpha 0.1" in out.splitlines()[0]


def test_show_without_a_method_is_one_summary_table_across_the_four_metrics(store, capsys):
    assert main(["show", "--results", str(store)]) == 0
    out = capsys.readouterr().out
    rows = _rows(out, "method")
    assert [r[:4] for r in rows] == [["lof", "2", "6", "7"], ["hbos[n_bins=5]", "2", "6", "6"]]
    runs = Store(store).latest()
    ok = runs[(runs.spec == "hbos[n_bins=5]") & (runs.status == "ok")]
    assert rows[1][4:] == [f"{ok.groupby('dataset')[m].mean().mean():.3f}" for m in ("auc", "ap", "recall", "f1")]
    assert out.split("\n\n")[1].splitlines()[0].split() == ["method", "datasets", "ok", "runs", "of", "AUC",
                                                            "AP", "recall", "F1"]


def test_show_a_method_name_picks_its_specs_and_an_unknown_one_is_one_error_line(store, capsys):
    assert main(["show", "hbos", "--results", str(store), "--threshold", "percentile"]) == 0
    out = capsys.readouterr().out
    assert "hbos[n_bins=5]: per seed" in out and "threshold percentile" in out
    assert main(["show", "knn", "--results", str(store)]) == 2
    assert capsys.readouterr().err == "error: no runs of 'knn' in this store; it holds lof, hbos[n_bins=5]\n"
