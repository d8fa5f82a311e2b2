"""Bad input gets a clear one-line error and a non-zero exit."""
import shutil

import pytest

from bench import data
from bench.cli import main
from bench.data import REPO_ROOT

CLASSICAL = str(REPO_ROOT / "configs" / "classical.toml")


def _err(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_unknown_method(capsys):
    assert main(["run", "--config", CLASSICAL, "--methods", "ocsvn", "--datasets", "letter"]) == 2
    line = _err(capsys)
    assert line.startswith("error: unknown method 'ocsvn'") and "ocsvm" in line


def test_unknown_dataset(capsys):
    assert main(["run", "--config", CLASSICAL, "--datasets", "cardoi"]) == 2
    line = _err(capsys)
    assert "unknown dataset 'cardoi'" in line and "Did you mean: cardio" in line


def test_malformed_spec(capsys):
    assert main(["run", "--config", CLASSICAL, "--methods", "ocsvm[nu]"]) == 2
    assert "malformed" in _err(capsys)


@pytest.mark.parametrize("text,msg", [
    ("methods = [", "not valid TOML"),
    ('methods = ["lof"]\nsedes = [0]', "unknown key(s) sedes"),
    ('methods = ["lof"]\nprotocol = "papr"', "unknown protocol 'papr'"),
    ('methods = ["lof"]\nseeds = [-1]', "seeds"),
    ('methods = ["lof"]\n[[override]]\nmethods = ["lof"]\ndatasets = ["letter"]', "params"),
])
def test_bad_config(tmp_path, capsys, text, msg):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg)]) == 2
    assert msg in _err(capsys)


def test_missing_config(capsys):
    assert main(["run", "--config", "no/such.toml"]) == 2
    assert "not found" in _err(capsys)


@pytest.mark.integration
def test_corrupt_data_file(tmp_path, capsys):
    src = data.locate("letter")
    shutil.copy(src, tmp_path / "letter.mat")
    with open(tmp_path / "letter.mat", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02")
    data._load_verified.cache_clear()
    assert main(["run", "--config", CLASSICAL, "--datasets", "letter", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "out")]) == 2
    assert "sha256" in _err(capsys)


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("ocsvm", "pca", "sod", "cardio", "satellite", "kde", "resample"):
        assert name in out


@pytest.mark.parametrize("cmd", ["run", "report", "list", "reference", "perf"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_report_without_store(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "no result store" in _err(capsys)
