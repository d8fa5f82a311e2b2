"""Whose interrupt is it? The user's Ctrl-C (or SIGTERM) stops the whole invocation (exit status 130 or
143); a method that raises ``KeyboardInterrupt`` or calls ``sys.exit`` inside ``fit`` or
``anomaly_score`` has failed, and only that run fails (stored with its reason).

The driver's signal handlers (``user_signals``) note that a signal arrived before raising; a
``KeyboardInterrupt`` without that note came from the method's own code. In worker processes SIGINT is
ignored (the driver stops them), so there every ``KeyboardInterrupt`` is the method's.
"""
from __future__ import annotations

import contextlib
import signal
import threading

_signalled = threading.Event()


def note_user_signal() -> None:
    """Called by a signal handler before it raises: the interrupt that follows is the user's."""
    _signalled.set()


def method_failure(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside a method's code, is that method's failure (to be stored as a
    failed run) rather than the user stopping the invocation."""
    if isinstance(exc, Exception):
        return True
    if isinstance(exc, SystemExit):
        return True
    if isinstance(exc, KeyboardInterrupt):
        return not _signalled.is_set()
    return False


def describe(exc: BaseException) -> str:
    """``SystemExit(4)`` -> "the method called sys.exit(4)"; otherwise the exception's own words."""
    if isinstance(exc, SystemExit):
        return f"the method called sys.exit({exc.code!r})"
    if isinstance(exc, KeyboardInterrupt) and not str(exc):
        return "the method raised KeyboardInterrupt (not a Ctrl-C from the user)"
    return str(exc)


@contextlib.contextmanager
def user_signals():
    """Within the block (main thread only), Ctrl-C raises KeyboardInterrupt as usual, after noting
    that it is the user's. Outside any block no interrupt counts as the user's."""
    _signalled.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        note_user_signal()
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is handler:
            signal.signal(signal.SIGINT, previous)
