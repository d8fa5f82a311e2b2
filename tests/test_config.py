"""Experiment configs: the shipped ones load, and ``base`` inherits keys and overrides."""
import pytest

from bench import BenchError, config
from bench.data import REPO_ROOT

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
