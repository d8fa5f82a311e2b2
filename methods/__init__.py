"""Method definitions. Every module here is imported by the registry; each registers its detectors
with ``@bench.contract.registry.register``. Modules whose name starts with ``_`` are helpers, not methods."""
