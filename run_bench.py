#!/usr/bin/env python
"""advae-bench entry point. ``python run_bench.py --help``; no arguments runs configs/paper.toml."""
import sys

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
