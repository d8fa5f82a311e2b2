"""Tools and one-off scripts: measurements, diagnoses and publishing, kept out of the method
definitions. ``tools/commands/`` holds the ones a user reaches through ``python run_bench.py <command>``
(``perf``, ``reference``); the others run as ``python tools/<name>.py``."""
