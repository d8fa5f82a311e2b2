"""The ``perf`` command for every deep method (tools/commands/perf.py): the FLOP count against a hand
computation, and the table's shape and columns on a tiny budget. Speeds themselves are not asserted."""
import numpy as np
import pytest
import torch

from bench import BenchError
from tools.commands.perf import COLUMNS, count_flops, dense_flops, run_perf


def test_dense_flops_by_hand():
    # 2 rows through 3 -> 4 -> 1: forward 2*2*3*4 + 2*2*4*1 = 64; backward: weight grads the same 64,
    # input grad of the second layer only (the first layer's input is data) 2*2*4*1 = 16
    assert dense_flops([(3, 4), (4, 1)], rows=2) == 64 + 64 + 16
    assert dense_flops([(3, 4)], rows=2, input_grad_first=True) == 3 * 48


def test_counter_matches_the_formula_on_a_tiny_autoencoder():
    """One AE iteration (Adam step) of a stack of S members: the matrix-product FLOPs torch runs are
    S times the dense formula over the layers AE trains, plus the forward of the logvar head (the
    encoder computes it; AE does not use it, so it has no backward)."""
    from methods.ae import AE

    d, k, b, S = 6, 2, 16, 3
    h = d // 2
    X = np.random.default_rng(0).random((b, d)).astype(np.float32)

    def fit(n_iter):
        return lambda: AE.fit_group([AE(n_iter=n_iter, batch_size=b, latent_dim=k, device="cpu",
                                        random_state=s) for s in range(S)], [X] * S)

    per_iteration = count_flops(fit(2)) - count_flops(fit(1))
    layers = [(d, h), (h, h), (h, k), (k, h), (h, h), (h, d)]
    assert per_iteration == S * (dense_flops(layers, rows=b) + 2 * b * h * k)


def test_perf_table_has_a_row_per_method_and_stack_size(capsys):
    torch.manual_seed(0)
    df = run_perf(datasets=["cardio"], methods=["ae", "dagmm"], n_iter=3, L=4, group_sizes=(1, 2),
                  peak=100.0)
    assert list(df.columns) == COLUMNS
    assert len(df) == 4 and set(df["method"]) == {"ae", "dagmm"} and set(df["group_size"]) == {1, 2}
    assert (df["ms_per_iteration"] > 0).all() and (df["gflop_per_iteration"] > 0).all()
    ae = df[df.method == "ae"].set_index("group_size")["gflop_per_iteration"]
    assert ae[2] == pytest.approx(2 * ae[1])  # a stack of 2 does twice the arithmetic of one member
    assert np.allclose(df["pct_of_peak"], df["gflops"])  # peak given as 100 GFLOP/s
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "thread(s)" in out and "load average" in out


def test_perf_paths_must_be_eager_or_compiled():
    with pytest.raises(BenchError, match="--paths takes eager and/or compiled"):
        run_perf(datasets=["cardio"], methods=["ae"], n_iter=2, paths=("fast",))
