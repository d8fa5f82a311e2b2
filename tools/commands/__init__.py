"""``python run_bench.py`` subcommands contributed from outside the plumbing: every module here calls
``bench.contract.registry.register_command``; the registry imports them by the package's name."""
