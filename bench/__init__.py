"""advae-bench plumbing: data, protocols, registry, runner, store, metrics, thresholds, reports, CLI.

Definitions (methods, dataset catalogue, experiment configs) live outside this package; adding one
never means editing anything here.
"""


class BenchError(Exception):
    """An error caused by the user's input (unknown name, bad spec or config, missing or corrupt data).

    The CLI prints its message on one line and exits non-zero, so the message must say what is wrong
    and what to do about it.
    """


class WorkError(Exception):
    """A failure during the work that stops it (not a run's own failure, which is recorded and the
    sweep goes on). The CLI prints its message on one line and exits with status 1."""
