"""A plugin that misbehaves is that plugin's problem, never the invocation's: ``sys.exit`` or a
``KeyboardInterrupt`` inside ``fit`` is a failed run of that method, stored with its reason (the other
methods' runs are stored too; only the user's Ctrl-C is exit status 130), and a plugin file that exits,
takes a name already registered or registers something that is not a Detector is one ``error:`` line
with exit status 2."""
import sqlite3
import textwrap

import pytest

from bench.contract import registry
from bench.cli import main
from bench.evaluation.data import REPO_ROOT

CLASSICAL = str(REPO_ROOT / "configs" / "classical.toml")

PLUGIN = textwrap.dedent('''
    import sys

    import numpy as np

    from bench.contract.base import Detector
    from bench.contract.registry import register


    class _Centre(Detector):
        """Squared distance to the training mean."""
        how = "ok"

        def __init__(self, random_state=0):
            self.random_state = random_state

        def fit(self, X):
            if self.how == "exit":
                sys.exit(4)
            if self.how == "interrupt":
                raise KeyboardInterrupt
            self.centre_ = X.mean(0)
            return self

        def anomaly_score(self, X):
            return ((X - self.centre_) ** 2).sum(1)


    @register("fault-exit")
    class Exits(_Centre):
        how = "exit"


    @register("fault-interrupt")
    class Interrupts(_Centre):
        how = "interrupt"
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a plugin file; the registry and $ADVAE_BENCH_PLUGINS are restored afterwards."""
    monkeypatch.setenv(registry.PLUGIN_ENV, "")  # recorded, so the plugins a test loads leave with it
    registry._load_all()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_PLUGINS", {})

    def write(text=PLUGIN, name="faults.py"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def _rows(out):
    with sqlite3.connect(out / "runs.sqlite") as con:
        return dict(con.execute("SELECT spec, status || ': ' || COALESCE(error, '') FROM runs"))


@pytest.mark.parametrize("method, reason", [
    ("fault-exit", "SystemExit: the method called sys.exit(4)"),
    ("fault-interrupt", "KeyboardInterrupt: the method raised KeyboardInterrupt (not a Ctrl-C from the user)"),
])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_method_that_exits_or_interrupts_in_fit_is_a_failed_run(tmp_path, plugin, capsys, method, reason,
                                                                 workers):
    out = tmp_path / "out"
    status = main(["run", "--plugin", plugin(), "--config", CLASSICAL, "--methods", f"hbos,{method}",
                   "--datasets", "letter", "--seeds", "0", "--workers", workers, "--no-report",
                   "--out", str(out)])
    assert status == 1
    assert f"failed     {method} / letter / seed 0: {reason}" in capsys.readouterr().out
    rows = _rows(out)
    assert rows["hbos"] == "ok: " and rows[method].startswith(f"failed: {reason}")


@pytest.mark.parametrize("text, message", [
    ("import sys\nsys.exit(7)\n", "failed to import: it called sys.exit(7) while being imported"),
    ("from bench.contract.registry import register\nfrom methods.classical import HBOS\n"
     "@register('lof')\nclass Mine(HBOS):\n    pass\n",
     "registers 'lof', a name already taken by methods.classical.LOF; register it under another name"),
    ("from bench.contract.registry import register\n@register('not-a-detector')\nclass Plain:\n    pass\n",
     "registers 'not-a-detector' as Plain, which is not a Detector; subclass bench.contract.base.Detector"),
])
def test_a_plugin_file_that_misbehaves_at_import_is_one_error_line(tmp_path, plugin, capsys, text, message):
    path = plugin(text, "bad.py")
    status = main(["run", "--plugin", path, "--config", CLASSICAL, "--methods", "hbos", "--datasets",
                   "letter", "--seeds", "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"error: --plugin {path} ") and message in err and err.count("\n") == 1
    assert registry.entry("lof").cls.__module__ == "methods.classical"
    assert not (tmp_path / "out" / "runs.sqlite").exists()


def _readme_plugin() -> str:
    """The plugin of the README's "Add a method (one file)", as printed there (dedented, so the
    block may sit at any indentation)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split('@register("knn-mean")')[0].rsplit("```python", 1)[1] + '@register("knn-mean")' + \
        text.split('@register("knn-mean")')[1].split("```")[0]
    return textwrap.dedent(block)


def test_the_readme_plugin_declares_its_constraints(tmp_path, plugin, capsys):
    """A plugin without constraints failed inside fit (exit 1) where a built-in method exits 2."""
    path = plugin(_readme_plugin(), "my_method.py")
    assert main(["list", "--plugin", path, "knn-mean"]) == 0
    out = capsys.readouterr().out
    assert "(KNNMean, version 1)" in out and "k = 5; an int >= 1" in out and "declares no" not in out
    assert main(["run", "--plugin", path, "--config", CLASSICAL, "--methods", "knn-mean[k=0]", "--datasets",
                 "letter", "--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: method spec 'knn-mean[k=0]': k must be an int >= 1, got 0")


def test_list_says_what_a_plugin_does_not_declare(plugin, capsys):
    """It showed "version 2" (the base class's), and an empty "parameters" header."""
    path = plugin('''
        import numpy as np
        from bench.contract.base import Detector
        from bench.contract.registry import register

        @register("bare")
        class Bare(Detector):
            """No parameters, no version."""
            def fit(self, X):
                return self
            def anomaly_score(self, X):
                return np.zeros(len(X))

        @register("loose")
        class Loose(Detector):
            """A parameter without a constraint."""
            def __init__(self, k=5):
                self.k = k
    ''', "bare.py")
    assert main(["list", "--plugin", path, "bare"]) == 0
    out = capsys.readouterr().out
    assert "(Bare, no version declared)" in out and "version 2" not in out
    assert "  parameters: none\n" in out and "parameters (value" not in out
    assert main(["list", "--plugin", path, "loose"]) == 0
    out = capsys.readouterr().out
    assert ("  (loose declares no parameter_constraints: a value it does not take is found only inside fit "
            "and fails its runs, instead of being refused before any work)") in out
    assert "    k = 5\n" in out


def _readme_loss_term() -> str:
    """The subclass of the README's "Add a loss term to adVAE (one subclass)", as printed there."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    head, tail = text.split('@register("advae-mu-l2")')
    return textwrap.dedent(head.rsplit("```python", 1)[1] + '@register("advae-mu-l2")' + tail.split("```")[0])


def test_the_readme_loss_term_trains_through_autograd_and_logs_its_term(plugin):
    """The README's example subclass runs as printed: it trains (autograd, since it overrides a
    definition), logs its new term, and its objective differs from adVAE's by exactly the term."""
    import numpy as np
    import torch

    path = plugin(_readme_loss_term(), "advae_mu_l2.py")
    registry.load_plugin(path)
    cls = registry.entry("advae-mu-l2").cls
    det = cls(n_iter=12, log_every=4, L=8, latent_dim=3, random_state=0)
    assert not det.uses_hand_gradients() and det.stack_member_params() == ()
    X = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    det.fit(X)
    assert len(det.history_["mu_sq"]) == 4 and np.isfinite(det.anomaly_score(X)).all()
    nets = det.build_networks(6, [0])
    x = torch.from_numpy(X[None, :16])
    lat = det.sample_latents(nets, x, torch.zeros(1, 16, 6))
    mine, terms = det.step2_losses(nets, x, lat)
    base, _ = registry.entry("advae").cls.step2_losses(det, nets, x, lat)
    torch.testing.assert_close(mine - base, det.weight * terms["mu_sq"])
