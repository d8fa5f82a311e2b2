"""Layer 1, the contract between plumbing and methods: the ``Detector`` interface (``base``), the
method registry and spec grammar (``registry``), parameter constraints (``params``), the code digest
that keys a method's runs (``sources``) and whose interrupt a failure is (``interrupts``).

Imports nothing of the layers above it.
"""
