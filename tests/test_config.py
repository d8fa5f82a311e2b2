"""Experiment configs: the shipped ones load, and ``base`` inherits keys and overrides."""
from pathlib import Path

import pytest

from bench import BenchError
from bench.execution import config
from bench.evaluation.data import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_configs_load(path):
    exp = config.load(path)
    assert exp.name == path.stem and exp.methods and exp.datasets


def test_paper_config_holds_the_full_roster_and_table_2():
    exp = config.load(REPO_ROOT / "configs" / "paper.toml")
    assert set(exp.methods) == {"advae", "e-advae", "g-advae", "ae", "vae", "gan", "wgan-gp", "mo-gaal",
                                "dagmm", "gmm", "kde", "lof", "ocsvm", "pca", "iforest", "abod", "hbos",
                                "sod"}
    assert exp.seeds == (0, 1, 2, 3, 4) and exp.protocol == "paper"
    assert exp.params_for("advae", "cardio") == {"latent_dim": 7, "lambda_": 0.1, "m_z": 20.0}
    assert exp.params_for("vae", "letter") == {"latent_dim": 11, "lambda_": 0.003}


def test_base_inherits_keys_and_overrides(tmp_path):
    (tmp_path / "parent.toml").write_text(
        'protocol = "resample"\nseeds = [0, 1]\ndatasets = ["cardio"]\nmethods = ["lof"]\n'
        '[[override]]\nmethods = ["advae"]\ndatasets = ["cardio"]\nparams = { m_z = 20.0, m_x = 2.0 }\n')
    (tmp_path / "child.toml").write_text(
        'base = "parent.toml"\nseeds = [3]\nmethods = ["advae[m_x=1.0]"]\n'
        '[[override]]\nmethods = ["advae"]\ndatasets = ["cardio"]\nparams = { m_z = 80.0 }\n')
    exp = config.load(tmp_path / "child.toml")
    assert exp.name == "child" and exp.protocol == "resample" and exp.datasets == ("cardio",)
    assert exp.seeds == (3,) and exp.methods == ("advae[m_x=1.0]",)
    assert exp.params_for("advae", "cardio") == {"m_z": 80.0, "m_x": 2.0}  # the child's block wins


def test_base_errors(tmp_path):
    (tmp_path / "a.toml").write_text('base = "missing.toml"\nmethods = ["lof"]\n')
    with pytest.raises(BenchError, match="missing.toml.*not found"):
        config.load(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('base = "c.toml"\n')
    (tmp_path / "c.toml").write_text('base = "b.toml"\n')
    with pytest.raises(BenchError, match="loops"):
        config.load(tmp_path / "b.toml")


@pytest.mark.parametrize("text, message", [
    ('methods = ["lof"]\nsweep = 5', "sweep must be a list of tables ([[sweep]] blocks with methods, param and "
                                     "values), got 5"),
    ('methods = ["lof"]\noverride = 3', "override must be a list of tables ([[override]] blocks with methods, "
                                        "datasets and params), got 3"),
    ("methods = [5]", "methods must be a string or a list of method specs, got [5]"),
    ('methods = ["lof"]\ndatasets = [5]', "datasets must be a string or a list of dataset names or files, got [5]"),
    ('methods = ["lof"]\nalpha = "high"', "alpha must be a number in (0, 1), got 'high'"),
    ('methods = ["lof"]\ncontamination = ["a"]', "contamination must be a number in [0, 1] or a list of numbers"),
    ('methods = ["lof"]\nlabel_col = 3', "label_col must be a string, got 3"),
    ('methods = ["lof"]\nname = "../../../tmp/x"', "name must be a name of letters, digits, '.', '-' and '_' (it "
                                                   "names the results folder; no path separators), got "
                                                   "'../../../tmp/x'"),
    ('methods = ["lof"]\nname = "a\\\\b"', "no path separators), got 'a\\\\b'"),
    ('methods = ["lof"]\n[[sweep]]\nmethods = [1]\nparam = "m_x"\nvalues = [1]',
     "sweep #1: methods must be a string or a list of method specs, got [1]"),
    ('methods = ["lof"]\n[[sweep]]\nmethods = ["lof"]\nparam = "n_neighbors"',
     "sweep #1: needs methods, param, values (missing values)"),
    ('methods = ["lof"]\n[[override]]\nmethods = "lof"\ndatasets = [3]\nparams = {n_neighbors = 3}',
     "override #1: datasets must be a string or a list of dataset names, got [3]"),
])
def test_a_config_value_of_the_wrong_type_is_one_error_line(tmp_path, capsys, text, message):
    """These were TypeError tracebacks (exit 1) or "could not convert string to float"."""
    from bench.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config {cfg}: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_config_that_is_not_utf8_or_cannot_be_read_is_one_error_line(tmp_path, capsys, monkeypatch):
    from bench.cli import main

    (tmp_path / "base.toml").write_bytes(b'methods = ["lof"]\ndescription = "caf\xe9"\n')
    (tmp_path / "child.toml").write_text('base = "base.toml"\n')
    for cfg in ("base.toml", "child.toml"):
        assert main(["run", "--config", str(tmp_path / cfg)]) == 2
        assert capsys.readouterr().err == (f"error: config {tmp_path / 'base.toml'}: not UTF-8 text (byte 0xe9 "
                                           "at offset 36); save it as UTF-8\n")
    good = tmp_path / "good.toml"
    good.write_text('methods = ["lof"]\n')
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(
        13, "Permission denied")) if self == good else real(self))
    assert main(["run", "--config", str(good)]) == 2  # was exit 1, "PermissionError ... stored"
    assert capsys.readouterr().err == f"error: config {good}: cannot be read (Permission denied)\n"


def test_two_datasets_of_one_name_from_the_command_line_blame_the_command_line(tmp_path, capsys):
    from bench.cli import main

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for d in "ab":
        (tmp_path / d / "mine.csv").write_text("f0,y\n" + "0.5,0\n" * 12 + "0.9,1\n")
    a, b = tmp_path / "a" / "mine.csv", tmp_path / "b" / "mine.csv"
    assert main(["run", "--methods", "hbos", "--datasets", f"{a},{b}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --datasets: two datasets are named 'mine' ({a} and {b}; an own file is named by its stem); "
        "rename one")
