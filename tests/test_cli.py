"""Bad input gets a clear one-line error and a non-zero exit."""
import shutil

import pytest

from bench.evaluation import data
from bench.cli import main
from bench.evaluation.data import REPO_ROOT

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
    # whole first sentences, not the docstring's first line
    assert ("DAGMM (Zong et al., ICLR 2018): autoencoder on adVAE's backbone + estimation network + "
            "Gaussian mixture; score = sample energy under the mixture fitted on the training rows.") in out
    # where each catalogued dataset was found
    assert f"found {REPO_ROOT / 'datasets' / 'data' / 'cardio.mat'}" in out


def test_list_says_where_datasets_are_or_are_not(tmp_path, capsys):
    shutil.copy(data.locate("letter"), tmp_path / "letter.mat")
    (tmp_path / "cardio.mat").write_bytes(b"not the cardio file")
    assert main(["list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"read from {tmp_path}: given by --data-dir" in out
    assert f"found {tmp_path / 'letter.mat'}" in out
    assert f"{tmp_path / 'cardio.mat'} has the WRONG sha256" in out
    # three of the paper's five and all 43 ADBench files (adbench/, not copied here) are missing
    assert "optdigits" in out and out.count("NOT FOUND there") == 3 + 43


def test_first_sentence():
    from bench.contract.registry import first_sentence

    assert first_sentence("A thing (Wang et al. 2020) that\n    spans lines. Second one.") == \
        "A thing (Wang et al. 2020) that spans lines."
    assert first_sentence("Uses e.g. Scott's rule. More.") == "Uses e.g. Scott's rule."
    assert first_sentence("No full stop") == "No full stop"


def test_list_method_shows_parameters_with_defaults(capsys):
    assert main(["list", "lof"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lof: Local Outlier Factor")
    assert "n_neighbors = 20; an int >= 1" in out and "novelty     = True; true or false" in out
    assert main(["list", "e-advae[n_iter=50]"]) == 0
    out = capsys.readouterr().out
    assert "transformer     = False (fixed by e-advae)" in out and "n_iter          = 50 (this spec)" in out
    assert "--quick: n_iter=300" in out
    assert main(["list", "pyod:KNN"]) == 0
    assert "n_neighbors   = 5" in capsys.readouterr().out  # PyOD's own default
    assert main(["list", "lfo"]) == 2
    assert "unknown method 'lfo'" in _err(capsys)


@pytest.mark.parametrize("cmd", ["run", "report", "compare", "leaderboard", "list", "show", "reference", "perf"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0 and "usage" in capsys.readouterr().out


def test_report_without_store(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    assert "no result store" in _err(capsys)


@pytest.mark.parametrize("argv, message", [
    (["reference", "--L", "0"], "--L must be >= 1"),
    (["perf", "--n-iter", "0"], "--n-iter must be >= 1"),
    (["perf", "--L", "0"], "--L must be >= 1"),
    (["perf", "--gradients", "fast"], "--gradients takes hand and/or autograd"),
])
def test_tool_arguments_are_checked_before_any_work(argv, message, tmp_path, capsys):
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "reference" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_reference_with_a_truncated_checkpoint_is_a_one_line_error(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for part in ("encoder", "decoder"):
        (ckpt / f"cardio-{part}.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["reference", "--checkpoints", str(ckpt), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "truncated or not a PyTorch file" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["run", "--methods", ""], "argument --methods: '' names no method"),
    (["run", "--methods", " , "], "names no method"),
    (["run", "--datasets", ""], "argument --datasets: '' names nothing"),
    (["run", "--seeds", "0-99999999"], "seed range '0-99999999' holds 100000000 seeds; run at most 1000"),
    (["run", "--seeds", "0-600,601-1200"], "asks for 1201 seeds; run at most 1000"),
    (["run", "--seeds", "5-2"], "seed range '5-2' is empty"),
    (["run", "--seeds", "1,x"], "seeds must look like 0,1,2 or 0-4"),
    (["run", "--seeds", "-3"], "seeds must look like"),

    (["run", "--workers", "0"], "argument --workers: must be a whole number of worker processes >= 1"),
    (["run", "--workers", "-2"], "worker processes >= 1"),
    (["run", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_bad_command_line_is_one_error_line(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert captured.out == ""


def test_seeds_are_deduplicated_in_order():
    from bench.execution import config
    from bench.cli import _seeds

    assert _seeds("3,0-2,1,3") == [3, 0, 1, 2]
    exp = config.load(CLASSICAL).restrict(seeds=[2, 2, 0])
    assert exp.seeds == (2, 0)


def test_config_seeds_are_bounded(tmp_path, capsys):
    cfg = tmp_path / "many.toml"
    cfg.write_text(f'methods = ["lof"]\nseeds = {list(range(1001))}\n')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "1001 seeds; run at most 1000" in _err(capsys)
    cfg.write_text('methods = ["lof"]\nseeds = [0, 0, 1]\n')
    from bench.execution import config
    assert config.load(cfg).seeds == (0, 1)


@pytest.mark.parametrize("executor", ["local", "dask"])
@pytest.mark.parametrize("workers, cores, memory, message", [
    ("1000", 2, 24 * 2**30, "--workers 1000: this machine holds at most 2 worker processes (2 cores, 24.0 GiB "
                            "of memory available at 0.5 GiB per worker); give at most 2, or leave --workers "
                            "out for one per core"),
    ("99999999999999999999", 2, 24 * 2**30, "--workers 999999... (20 digits): this machine holds at most 2"),
    ("8", 16, 2**30, "--workers 8: this machine holds at most 2 worker processes (16 cores, 1.0 GiB of "
                     "memory available at 0.5 GiB per worker)"),
])
def test_workers_are_bounded_by_cores_and_memory(monkeypatch, capsys, executor, workers, cores, memory,
                                                 message):
    """`--workers 1000 --executor dask` started a thousand processes on 2 cores until the out-of-memory
    killer came; `--workers 99999999999999999999` was an OverflowError traceback."""
    from bench.execution import executors

    monkeypatch.setattr(executors, "usable_cores", lambda: cores)
    monkeypatch.setattr(executors, "available_memory", lambda: memory)
    started = []
    monkeypatch.setattr(executors.Executor, "start", lambda self: started.append(self))
    assert main(["run", "--config", CLASSICAL, "--methods", "hbos", "--datasets", "letter", "--seeds", "0",
                 "--workers", workers, "--executor", executor]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"error: {message}")
    assert started == []
    assert executors.check_workers(None) == min(cores, memory // executors.WORKER_MEMORY)


def test_report_with_an_unknown_published_table_exits_2_like_compare(tmp_path, capsys):
    """It exited 0 in silence (the reproduction section only said so on the page)."""
    import sys
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _stores import make_store

    make_store(tmp_path, {("m1", "letter"): 1.0})
    for argv in (["report", "--out", str(tmp_path)], ["compare", "--results", str(tmp_path)]):
        assert main([*argv, "--published", "nosuch"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: no published table 'nosuch'") and err.count("\n") == 1
    assert not (tmp_path / "runs.csv").exists()  # checked before any work


def test_leaderboard_of_several_stores_writes_where_help_says_and_refuses_one_given_twice(tmp_path, capsys):
    import sys
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _stores import make_store

    ds = ("letter", "cardio")
    make_store(tmp_path / "a", {(m, d): s for d in ds for m, s in (("weak", 0.2), ("mid", 1.0))})
    make_store(tmp_path / "b", {("strong", d): 3.0 for d in ds})
    assert main(["leaderboard", "--results", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert f"wrote {tmp_path / 'a' / 'leaderboard' / 'leaderboard-auc.csv'}" in capsys.readouterr().err
    assert (tmp_path / "a" / "leaderboard" / "leaderboard-auc.csv").is_file()
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    assert "(default: <results>/leaderboard of the first --results DIR)" in " ".join(
        capsys.readouterr().out.split())
    assert main(["leaderboard", "--results", str(tmp_path / "a"), str(tmp_path / "b"),
                 str(tmp_path / "a") + "/"]) == 2
    assert capsys.readouterr().err == (f"error: --results names one directory twice ({tmp_path / 'a'} and "
                                       f"{tmp_path / 'a'}/); give each result directory once\n")


def test_ctrl_c_while_the_methods_import_is_an_interrupt_not_a_traceback(monkeypatch, capsys):
    from bench import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_parser", interrupted)
    try:
        status = main(["list"])
    except KeyboardInterrupt:
        pytest.fail("the interrupt escaped main() (a traceback for the user)")
    assert status == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("flag, value, message", [
    ("--seeds", "\u0663", "seeds must look like 0,1,2 or 0-4 (integers 0 to 4294967295), got '\u0663'"),
    ("--seeds", "0-\u00b3", "seeds must look like"),  # a superscript three: isdigit(), but not int()
    ("--methods", "lof[n_neighbors=5,n_neighbors=6]",
     "malformed method spec 'lof[n_neighbors=5,n_neighbors=6]': parameter 'n_neighbors' is given twice"),
])
def test_silently_accepted_input_is_now_refused(tmp_path, capsys, flag, value, message):
    """An Arabic-Indic three ran seed 3; the second n_neighbors silently won."""
    argv = {"--seeds": "0", "--methods": "hbos", flag: value}
    assert main(["run", "--config", CLASSICAL, "--methods", argv["--methods"], "--datasets", "letter",
                 "--seeds", argv["--seeds"], "--workers", "1", "--no-report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs.sqlite").exists()
