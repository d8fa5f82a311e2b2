"""Config families (``[families]``, referenced as ``@name``) and ``per_dataset`` tables: their
semantics on small configs, and the shipped configs resolving to exactly what they resolved to when
every per-dataset value was an explicit [[override]] block (issue 21)."""
import pytest

from bench import BenchError
from bench.execution import config, runner
from bench.evaluation.data import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
PAPER = ["letter", "cardio", "satellite", "optdigits", "pendigits"]


def _load(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return config.load(path)


def _error(tmp_path, text, name="exp.toml") -> str:
    with pytest.raises(BenchError) as exc:
        _load(tmp_path, text, name)
    assert "\n" not in str(exc.value)
    return str(exc.value)


HEAD = 'protocol = "resample"\ndatasets = ["cardio", "letter"]\n'


# -- families ----------------------------------------------------------------------------------------

def test_families_expand_in_place_in_order_nested_and_without_duplicates(tmp_path):
    exp = _load(tmp_path, HEAD + 'methods = ["lof", "@deep", "hbos", "@advae", "ae"]\n'
                '[families]\nadvae = ["advae", "e-advae"]\ndeep = ["@advae", "ae", "vae", "ae", "@advae"]\n')
    assert exp.methods == ("lof", "advae", "e-advae", "ae", "vae", "hbos")
    assert exp.families == {"advae": ("advae", "e-advae"), "deep": ("advae", "e-advae", "ae", "vae")}


def test_a_family_may_hold_specs_and_be_used_in_sweeps(tmp_path):
    exp = _load(tmp_path, HEAD + 'methods = ["@v"]\n[families]\nv = ["advae", "advae[m_x=1.0]"]\n'
                'pair = ["advae", "vae"]\n[[sweep]]\nmethods = ["@pair"]\nparam = "lambda_"\nvalues = [0.1]\n')
    assert exp.methods == ("advae", "advae[m_x=1.0]", "advae[lambda_=0.1]", "vae[lambda_=0.1]")


def test_the_command_line_may_name_a_family(tmp_path):
    exp = _load(tmp_path, HEAD + 'methods = ["lof"]\n[families]\npair = ["advae", "vae"]\n')
    assert exp.restrict(methods=["@pair", "hbos"]).methods == ("advae", "vae", "hbos")
    assert exp.restrict(methods=[], sweeps=[config.parse_sweep("@pair:m_z=10")]).methods == (
        "advae[m_z=10]", "vae[m_z=10]")
    with pytest.raises(BenchError, match=r"^--methods: unknown family @nope; the config's families: @pair$"):
        exp.restrict(methods=["@nope"])


@pytest.mark.parametrize("families, message", [
    ('a = ["@a"]', "family @a includes itself (@a -> @a)"),
    ('a = ["lof", "@b"]\nb = ["@c"]\nc = ["@a"]', "family @a includes itself (@a -> @b -> @c -> @a)"),
    ('a = ["lof", "@zz"]', "family @a includes unknown family @zz; the config's families: @a"),
])
def test_family_cycles_and_unknown_members_name_the_file_and_the_family(tmp_path, families, message):
    err = _error(tmp_path, HEAD + 'methods = ["lof"]\n[families]\n' + families + "\n")
    assert err == f"config {tmp_path / 'exp.toml'}: {message}"


@pytest.mark.parametrize("text, message", [
    ('methods = ["@zz"]\n[families]\nb = ["lof"]\na = ["hbos"]',
     "unknown family @zz in methods; the config's families: @a, @b"),
    ('methods = ["lof"]\n[[override]]\nmethods = ["lof", "@zz"]\ndatasets = ["cardio"]\nparams = {n_neighbors = 3}',
     "unknown family @zz in override #1 methods; the config defines no [families]"),
    ('methods = ["lof"]\n[per_dataset."@zz"]\nn_neighbors = { cardio = 3 }',
     "unknown family @zz in per_dataset.\"@zz\"; the config defines no [families]"),
    ('methods = []\n[[sweep]]\nmethods = ["@zz"]\nparam = "m_x"\nvalues = [1.0]',
     "unknown family @zz in sweep #1 methods; the config defines no [families]"),
    ('methods = ["lof"]\n[families]\nDeep_Nets = ["ae"]',
     "family name 'Deep_Nets' must be lowercase kebab case"),
    ('methods = ["lof"]\n[families]\nnets = "ae"', "families: nets must be a list of method specs and @families"),
    ('[families]\nnets = ["ae"]\nmethods = ["@nets"]',
     "'methods' is a config key, written under [families] (TOML puts a key in the table above it"),
    ('methods = ["lof"]\nfamilies = ["ae"]', "families must be a table of families"),
])
def test_unknown_families_and_malformed_tables_are_one_error_line(tmp_path, text, message):
    err = _error(tmp_path, HEAD + text + "\n")
    assert err.startswith(f"config {tmp_path / 'exp.toml'}: ") and message in err


def test_families_are_inherited_through_base_and_a_redefinition_applies_to_the_base_too(tmp_path):
    (tmp_path / "parent.toml").write_text(
        HEAD + 'methods = ["@nets", "lof"]\n[families]\nnets = ["ae", "vae"]\nkl = ["vae"]\n'
        '[per_dataset."@nets"]\nlatent_dim = { cardio = 7 }\n')
    child = _load(tmp_path, 'base = "parent.toml"\n[families]\nnets = ["ae", "dagmm"]\n', "child.toml")
    assert child.families == {"nets": ("ae", "dagmm"), "kl": ("vae",)}
    assert child.methods == ("ae", "dagmm", "lof")  # the parent's methods, with the child's @nets
    assert child.params_for("dagmm", "cardio") == {"latent_dim": 7}  # and the parent's per_dataset
    assert child.params_for("vae", "cardio") == {}
    grandchild = _load(tmp_path, 'base = "child.toml"\nmethods = ["@kl", "@nets"]\n', "grandchild.toml")
    assert grandchild.methods == ("vae", "ae", "dagmm")
    # an unknown family is blamed on the file that wrote the reference, not the one being loaded
    (tmp_path / "bad.toml").write_text(HEAD + 'methods = ["@nope"]\n')
    err = _error(tmp_path, 'base = "bad.toml"\n[families]\nx = ["lof"]\n', "c.toml")
    assert err == f"config {tmp_path / 'bad.toml'}: unknown family @nope in methods; the config's families: @x"


# -- per_dataset -------------------------------------------------------------------------------------

def test_per_dataset_is_one_override_per_key_parameter_and_dataset_before_the_files_own(tmp_path):
    families = '[families]\nkl = ["advae", "vae"]\n'
    short = _load(tmp_path, HEAD + 'methods = ["@kl"]\n' + families +
                  '[per_dataset."@kl"]\nlambda_ = { cardio = 0.1, letter = 0.003 }\nlatent_dim = { cardio = 7 }\n'
                  '[per_dataset.advae]\nm_z = { cardio = 20.0 }\n'
                  '[[override]]\nmethods = ["vae"]\ndatasets = ["cardio"]\nparams = { gamma = 0.5 }\n', "short.toml")
    long = _load(tmp_path, HEAD + 'methods = ["advae", "vae"]\n' + "".join(
        f'[[override]]\nmethods = {methods}\ndatasets = ["{d}"]\nparams = {{ {p} }}\n'
        for methods, d, p in [('["advae", "vae"]', "cardio", "lambda_ = 0.1"),
                              ('["advae", "vae"]', "letter", "lambda_ = 0.003"),
                              ('["advae", "vae"]', "cardio", "latent_dim = 7"),
                              ('["advae"]', "cardio", "m_z = 20.0"),
                              ('["vae"]', "cardio", "gamma = 0.5")]), "long.toml")
    assert short.overrides == long.overrides and short.methods == long.methods
    assert short.params_for("advae", "cardio") == {"lambda_": 0.1, "latent_dim": 7, "m_z": 20.0}


def test_precedence_per_dataset_then_override_then_the_spec(tmp_path):
    exp = _load(tmp_path, 'protocol = "resample"\ndatasets = ["cardio"]\n'
                'methods = ["@kl", "advae[m_z=80.0]"]\n[families]\nkl = ["advae", "vae"]\n'
                '[per_dataset."@kl"]\nlambda_ = { cardio = 0.1 }\n[per_dataset.advae]\nm_z = { cardio = 20.0 }\n'
                '[[override]]\nmethods = ["advae"]\ndatasets = ["cardio"]\nparams = { m_z = 40.0 }\n')
    params = {r.spec: r.params for r in runner.expand(exp)}
    assert params["advae"]["m_z"] == 40.0 and params["advae"]["lambda_"] == 0.1  # override > per_dataset
    assert params["advae[m_z=80.0]"]["m_z"] == 80.0  # the spec > override
    assert params["vae"]["lambda_"] == 0.1


def test_a_derived_configs_per_dataset_comes_after_the_bases_overrides(tmp_path):
    (tmp_path / "parent.toml").write_text(
        HEAD + 'methods = ["advae"]\n[per_dataset.advae]\nm_x = { cardio = 1.0 }\n'
        '[[override]]\nmethods = ["advae"]\ndatasets = ["cardio"]\nparams = { m_z = 20.0, m_x = 1.5 }\n')
    child = _load(tmp_path, 'base = "parent.toml"\n[per_dataset.advae]\nm_z = { cardio = 60.0 }\n'
                  '[[override]]\nmethods = ["advae"]\ndatasets = ["cardio"]\nparams = { m_x = 3.0 }\n', "c.toml")
    assert child.params_for("advae", "cardio") == {"m_x": 3.0, "m_z": 60.0}


def test_a_family_of_specs_applies_per_dataset_values_by_method_name(tmp_path):
    exp = _load(tmp_path, HEAD + 'methods = ["@g"]\n[families]\ng = ["gan", "gan[score=anogan]"]\n'
                '[per_dataset."@g"]\nlatent_dim = { cardio = 7 }\n')
    assert exp.overrides[0].methods == ("gan",)
    assert {r.spec: r.params["latent_dim"] for r in runner.expand(exp) if r.dataset == "cardio"} == {
        "gan": 7, "gan[score=anogan]": 7}


@pytest.mark.parametrize("text, message", [
    ('per_dataset = 3', "per_dataset must be a table of tables"),
    ('[per_dataset]\nlof = 3', "per_dataset: lof must be a table of parameter = { dataset = value, ... }"),
    ('[per_dataset.lof]\nn_neighbors = 3', 'per_dataset."lof": n_neighbors must be a table of dataset = value'),
    ('[per_dataset.lof]\nn_neighbors = { cardio = { a = 1 } }', 'per_dataset."lof": n_neighbors must be a table'),
    ('[per_dataset."lof[n_neighbors=3]"]\nn_neighbors = { cardio = 3 }',
     "per_dataset key 'lof[n_neighbors=3]' must be a family (\"@name\") or a method name"),
    ('[per_dataset.lof]\n"n-neighbors" = { cardio = 3 }', "'n-neighbors' is not a parameter name"),
    ('[per_dataset.lof]\nn_neighbors = { cardio = 3 }\nseeds = [1]',
     "'seeds' is a config key, written under [per_dataset.\"lof\"]"),
])
def test_a_malformed_per_dataset_table_is_one_error_line(tmp_path, capsys, text, message):
    from bench.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text(HEAD + 'methods = ["lof"]\n' + text + "\n")
    assert main(["run", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config {cfg}: ") and message in err and err.count("\n") == 1


def test_a_dataset_in_per_dataset_is_checked_as_an_overrides_is(tmp_path):
    # a catalogued dataset the run leaves out is fine (as for [[override]]); an unknown one is an error
    exp = _load(tmp_path, HEAD + 'methods = ["lof"]\n[per_dataset.lof]\nn_neighbors = { cardio = 3, pendigits = 9 }\n')
    assert exp.params_for("lof", "pendigits") == {"n_neighbors": 9}
    per = _error(tmp_path, HEAD + 'methods = ["lof"]\n[per_dataset.lof]\nn_neighbors = { nosuch = 3 }\n', "a.toml")
    ov = _error(tmp_path, HEAD + 'methods = ["lof"]\n[[override]]\nmethods = ["lof"]\ndatasets = ["nosuch"]\n'
                'params = { n_neighbors = 3 }\n', "b.toml")
    assert per == ov and "nosuch" in per


# -- the shipped configs -----------------------------------------------------------------------------

#: Paper Table 2 (and the authors' latent sizes), as configs/paper.toml held them in explicit
#: [[override]] blocks before families and per_dataset.
LATENT_DIM = {"letter": 11, "cardio": 7, "satellite": 12, "optdigits": 16, "pendigits": 5}
LAMBDA = {"letter": 0.003, "cardio": 0.1, "satellite": 0.01, "optdigits": 0.03, "pendigits": 0.01}
M_Z = {"letter": 40.0, "cardio": 20.0, "satellite": 40.0, "optdigits": 40.0, "pendigits": 20.0}
ADVAE = ["advae", "e-advae", "g-advae"]
BACKBONE = [*ADVAE, "ae", "vae", "gan", "wgan-gp", "dagmm"]
CLASSICAL = ["gmm", "kde", "lof", "ocsvm", "pca", "iforest", "abod", "hbos", "sod"]
ROSTER = [*ADVAE, "ae", "vae", "gan", "wgan-gp", "mo-gaal", "dagmm", *CLASSICAL]


def _table_2(method: str, dataset: str) -> dict:
    out = {}
    if method in BACKBONE:
        out["latent_dim"] = LATENT_DIM[dataset]
    if method in [*ADVAE, "vae"]:
        out["lambda_"] = LAMBDA[dataset]
    if method in ADVAE:
        out["m_z"] = M_Z[dataset]
    return out


def test_paper_config_resolves_to_table_2_for_every_method_and_dataset():
    exp = config.load(CONFIGS / "paper.toml")
    assert list(exp.methods) == ROSTER and list(exp.datasets) == PAPER
    for method in [*ROSTER, "pyod:COPOD"]:
        for dataset in PAPER:
            assert exp.params_for(method, dataset) == _table_2(method, dataset), (method, dataset)
    assert exp.families["backbone"] == tuple(BACKBONE) and exp.families["classical"] == tuple(CLASSICAL)


def _explicit_paper(tmp_path) -> str:
    """configs/paper.toml as it was written before families: every value in its own [[override]]."""
    blocks = [(BACKBONE, [d], f"latent_dim = {k}") for d, k in LATENT_DIM.items()]
    blocks += [([*ADVAE, "vae"], [d], f"lambda_ = {v}") for d, v in LAMBDA.items()]
    blocks += [(ADVAE, [d], f"m_z = {v}") for d, v in M_Z.items()]
    text = (f'protocol = "paper"\nseeds = [0, 1, 2, 3, 4]\nthreshold = "paper"\nalpha = 0.1\n'
            f"datasets = {PAPER!r}\nmethods = {ROSTER!r}\n".replace("'", '"'))
    text += "".join(f"[[override]]\nmethods = {m!r}\ndatasets = {d!r}\nparams = {{ {p} }}\n".replace("'", '"')
                    for m, d, p in blocks)
    path = tmp_path / "paper.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name, methods", [
    ("paper", None), ("classical", CLASSICAL), ("sensitivity", "inherit"), ("ablation", "inherit"),
    ("contamination", "inherit"), ("gan_scores", "inherit")])
def test_shipped_configs_give_the_runs_of_explicit_overrides_same_keys_same_order(tmp_path, name, methods):
    """The run keys hold every resolved parameter, so equal keys in equal order are equal experiments."""
    explicit = _explicit_paper(tmp_path)
    if methods == "inherit":  # the derived config itself, on top of the explicit paper.toml
        text = (CONFIGS / f"{name}.toml").read_text()
        (tmp_path / f"{name}.toml").write_text(text)
        explicit = tmp_path / f"{name}.toml"
    elif methods is not None:  # classical.toml as it was written: its own keys, threshold kde
        explicit.write_text(explicit.read_text().replace('"paper"\nalpha', '"kde"\nalpha')
                            .replace(f"methods = {ROSTER!r}".replace("'", '"'),
                                     f"methods = {methods!r}".replace("'", '"')))
    shipped = runner.expand(config.load(CONFIGS / f"{name}.toml"))
    before = runner.expand(config.load(explicit))
    assert [(r.key, r.spec, r.dataset, r.seed) for r in shipped] == [
        (r.key, r.spec, r.dataset, r.seed) for r in before]
    assert len(shipped) > 0
