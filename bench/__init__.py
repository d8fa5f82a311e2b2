"""advae-bench plumbing: data, protocols, registry, runner, store, metrics, thresholds, reports, CLI.

Definitions (methods, dataset catalogue, experiment configs) live outside this package; adding one
never means editing anything here.
"""
import os as _os

#: Numerical code paths pinned before any BLAS call (set here, the first module any entry point
#: imports, and again in engine/invariant.py). MKL's default mode picks kernels by the batch, the
#: CPU and the memory alignment: on an AMD EPYC (AVX2) the weight-gradient product of a stack of
#: networks rounded differently for members 1.. than in their solo fits (~10 % of layer shapes).
#: MKL's Conditional Numerical Reproducibility mode (MKL_CBWR) fixes the code path, which makes those
#: products independent of the batch; ATen's vectorised kernels are pinned to the same AVX2 width so
#: that x86 machines with and without AVX-512 take the same paths. A value already set in the
#: environment wins (the run record stores both).
NUMERICS_ENV = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
for _name, _value in NUMERICS_ENV.items():
    _os.environ.setdefault(_name, _value)


class BenchError(Exception):
    """An error caused by the user's input (unknown name, bad spec or config, missing or corrupt data).

    The CLI prints its message on one line and exits non-zero, so the message must say what is wrong
    and what to do about it.
    """


class WorkError(Exception):
    """A failure during the work that stops it (not a run's own failure, which is recorded and the
    sweep goes on). The CLI prints its message on one line and exits with status 1."""
