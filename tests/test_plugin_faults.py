"""A plugin that misbehaves is that plugin's problem, never the invocation's: ``sys.exit`` or a
``KeyboardInterrupt`` inside ``fit`` is a failed run of that method, stored with its reason (the other
methods' runs are stored too; only the user's Ctrl-C is exit status 130), and a plugin file that exits,
takes a name already registered or registers something that is not a Detector is one ``error:`` line
with exit status 2."""
import sqlite3
import textwrap

import pytest

from bench import registry
from bench.cli import main
from bench.data import REPO_ROOT

CLASSICAL = str(REPO_ROOT / "configs" / "classical.toml")

PLUGIN = textwrap.dedent('''
    import sys

    import numpy as np

    from bench.base import Detector
    from bench.registry import register


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
    monkeypatch.delenv(registry.PLUGIN_ENV, raising=False)
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
    err = capsys.readouterr().err
    assert status == 1
    assert f"failed     {method} / letter / seed 0: {reason}" in err
    rows = _rows(out)
    assert rows["hbos"] == "ok: " and rows[method].startswith(f"failed: {reason}")


@pytest.mark.parametrize("text, message", [
    ("import sys\nsys.exit(7)\n", "failed to import: it called sys.exit(7) while being imported"),
    ("from bench.registry import register\nfrom methods.classical import HBOS\n"
     "@register('lof')\nclass Mine(HBOS):\n    pass\n",
     "registers 'lof', a name already taken by methods.classical.LOF; register it under another name"),
    ("from bench.registry import register\n@register('not-a-detector')\nclass Plain:\n    pass\n",
     "registers 'not-a-detector' as Plain, which is not a Detector; subclass bench.base.Detector"),
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
