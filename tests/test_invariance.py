"""Stack-size invariance (engine/invariant.py): a member trained in a stack of any size 1..8 is bit
for bit its solo fit, for every deep method that trains stacks, at the five datasets' shapes.

Synthetic rows with each dataset's width d and latent size k (configs/paper.toml), and n = 128 +
(the dataset's paper-split training rows mod 128) rows, so every second iteration is the short last
batch of an epoch that the real data has (44 rows for cardio, 48 letter, 105 satellite, 85 optdigits,
123 pendigits). A few iterations: rounding that depends on the stack size shows at the first step."""
import numpy as np
import pytest
import torch

from bench.contract.registry import build, entry

torch.set_num_threads(1)

#: dataset -> (paper-split training rows, d, k of configs/paper.toml)
SHAPES = {"letter": (1200, 32, 11), "cardio": (1324, 21, 7), "satellite": (3945, 36, 12),
          "optdigits": (4053, 64, 16), "pendigits": (5371, 16, 5)}
#: every deep method that trains seed stacks (mo-gaal fits one run at a time: max_group_size 1)
STACKED = ["ae", "vae", "gan", "wgan-gp", "dagmm", "advae", "e-advae", "g-advae",
           "advae[gradients=autograd]", "gan[score=snapshots,n_snapshots=3]",
           "wgan-gp[score=snapshots,n_snapshots=3]"]
N_ITER = 6  # iterations 1, 3 and 5 are short last batches


def synthetic(dataset: str, seed: int = 0):
    n_real, d, k = SHAPES[dataset]
    n = 128 + n_real % 128
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 40, d)) @ (rng.normal(size=(d, d)) / np.sqrt(d))
    X = (X - X.min(0)) / (X.max(0) - X.min(0))
    return X[:n], X[n:], k


def fitted_state(det) -> dict:
    return {f"{net}.{key}": value for net, module in det.networks_.items()
            for key, value in module.state_dict().items()}


def make(spec: str, k: int, seed: int):
    extra = {"L": 16} if "advae" in spec or spec == "vae" else {}
    return build(spec, {"n_iter": N_ITER, "latent_dim": k, "log_every": 4, "device": "cpu",
                        "random_state": seed, **extra})[0]


@pytest.mark.parametrize("dataset", list(SHAPES))
@pytest.mark.parametrize("spec", STACKED)
def test_member_of_any_stack_is_its_solo_fit(spec, dataset):
    X, X_test, k = synthetic(dataset)
    cls = entry(spec.split("[")[0]).cls
    assert cls.max_group_size >= 8
    solo = {}
    for S in range(1, 9):
        group = cls.fit_group([make(spec, k, s) for s in range(S)], [X] * S)
        for s, det in enumerate(group):
            assert not isinstance(det, Exception), det
            if s not in solo:  # the stack of S = s + 1 is the first to hold seed s; fit it alone
                alone = det if S == 1 else make(spec, k, s).fit(X)
                solo[s] = (fitted_state(alone), alone.anomaly_score(X_test), alone.history_)
            state, scores, history = solo[s]
            got = fitted_state(det)
            differ = [name for name in state if not torch.equal(got[name], state[name])]
            assert not differ, f"{spec} {dataset}: seed {s} in a stack of {S} differs in {differ[:3]}"
            np.testing.assert_array_equal(det.anomaly_score(X_test), scores)
            assert det.history_ == history
    assert not np.array_equal(solo[0][1], solo[1][1])  # the seed matters


# ---- through the runner: what is stored for a seed does not depend on what else was asked ---------
def install_synthetic_catalogue(monkeypatch, names=tuple(SHAPES)) -> dict:
    """The datasets' shapes as synthetic data sets ``synth-<name>`` (paper protocol: the first n rows
    train, the 40 after them test, half of those anomalies), served by ``bench.evaluation.data.load``."""
    import hashlib

    from bench.evaluation import data

    made = {}
    for name in names:
        X_train, X_test, _ = synthetic(name)
        X = np.vstack([X_train, X_test])
        y = np.r_[np.zeros(len(X_train), int), np.zeros(20, int), np.ones(20, int)]
        made[f"synth-{name}"] = data.Dataset(f"synth-{name}", X, y,
                                             hashlib.sha256(X.tobytes()).hexdigest(),
                                             {"paper_split": {"kind": "tail-test", "n_test": 40}})
    real_load = data.load
    monkeypatch.setattr(data, "load", lambda name, data_dir=None, label_col=None:
                        made.get(name) or real_load(name, data_dir, label_col))
    return made


@pytest.fixture
def synthetic_catalogue(monkeypatch):
    return install_synthetic_catalogue(monkeypatch)


def test_stored_seed_is_the_full_block_result_whatever_was_asked(tmp_path, synthetic_catalogue):
    from bench.execution import runner
    from bench.execution.config import Experiment, Override
    from bench.execution.store import Store

    datasets = tuple(synthetic_catalogue)
    names = tuple(s.split("[")[0] for s in STACKED)
    overrides = tuple(Override(names, (f"synth-{name}",), {"latent_dim": k, "n_iter": N_ITER,
                                                            "log_every": 4})
                      for name, (_, _, k) in SHAPES.items())
    overrides += (Override(tuple(n for n in names if n == "vae" or "advae" in n), datasets,
                           {"L": 16}),)
    specs = tuple(STACKED)

    def run(out, seeds):
        exp = Experiment(name="t", protocol="paper", seeds=tuple(seeds), threshold="kde", alpha=0.1,
                         datasets=datasets, methods=specs, overrides=overrides)
        counts = runner.run_experiment(exp, out, workers=1, progress=False)
        assert counts["failed"] == 0, Store(out).frame().query("status == 'failed'")["error"].tolist()
        return counts

    run(tmp_path / "full", range(5))  # the reference: seeds 0-4 as one block
    assert run(tmp_path / "pieces", range(3))["ok"] == 3 * len(specs) * len(datasets)
    assert run(tmp_path / "pieces", range(5))["skipped"] == 3 * len(specs) * len(datasets)  # 3-4: a stack of 2
    run(tmp_path / "single", [3])  # one seed alone

    def scores(out):
        store = Store(out)
        df = store.frame(with_blobs=True)
        store.close()
        assert (df["status"] == "ok").all()
        return {(r.spec, r.dataset, r.seed): (r.key, np.r_[r.train_scores, r.test_scores])
                for r in df.itertuples()}

    full, pieces, single = scores(tmp_path / "full"), scores(tmp_path / "pieces"), scores(tmp_path / "single")
    assert len(full) == len(pieces) == 5 * len(specs) * len(datasets)
    for where in (pieces, single):
        for key, (run_key, test_scores) in where.items():
            assert run_key == full[key][0]
            np.testing.assert_array_equal(test_scores, full[key][1], err_msg=str(key))
