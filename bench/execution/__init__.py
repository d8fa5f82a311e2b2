"""Layer 3, running experiments: experiment configs (``config``), the runner that expands an
experiment into runs and groups (``plan``, ``runner``, ``progress``), where groups execute
(``executors``: in process, a local pool, Dask), the sqlite store of records and scores (``store``) and
what a fit reports while it trains (``telemetry``).

Imports ``bench.contract`` and ``bench.evaluation``.
"""
