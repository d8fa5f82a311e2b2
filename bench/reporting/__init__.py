"""Layer 4, what a store becomes for a reader: tables and figures (``report``, ``outputs``), the
leaderboard and its rank statistics, the comparison with a published table (``compare``), the
sensitivity plots, ``index.html`` (``html``) and ``show``.

Imports the three layers below; only ``bench.cli`` imports it.
"""
