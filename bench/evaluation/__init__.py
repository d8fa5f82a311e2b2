"""Layer 2, what a run is evaluated on and how: datasets and their catalogue (``data``, own files in
``datafile``), protocols (which rows train and test), thresholds, metrics, and the check of the
evaluation path against the adVAE authors' released weights (``reference``).

Imports only ``bench.contract``.
"""
