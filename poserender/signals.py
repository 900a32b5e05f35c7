"""One signal policy for the whole process: SIGINT, SIGTERM and SIGHUP mean the same thing.

* Outside a stream (export, build, bench, ...), each of them raises :class:`Interrupted` (a
  ``KeyboardInterrupt``) in the main thread, so every ``finally`` and ``except BaseException``
  that removes a temporary output runs, exactly as it does for Ctrl-C. The CLI then exits with
  128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP).
* Inside a stream (:func:`graceful`), the first of them asks the stream to finish the frames in
  flight and close its output properly; a second one raises :class:`Interrupted` to stop at once.

A SIGHUP the process was told to ignore (``nohup``) stays ignored. SIGINT and SIGTERM are always
handled: a background job of a non-interactive shell starts with SIGINT ignored, and an explicit
``kill -INT`` to it should still stop it cleanly.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Dict, Iterator

HANDLED = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                            getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def exit_code(exc: BaseException) -> int:
    """128 + signal for an :class:`Interrupted`; 130 for a plain KeyboardInterrupt (Ctrl-C)."""
    return getattr(exc, "exit_code", 128 + signal.SIGINT)


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


def _ignored(signum: int) -> bool:
    """SIGHUP ignored by the parent (nohup) stays ignored; the others are always handled."""
    return signum == getattr(signal, "SIGHUP", None) and signal.getsignal(signum) == signal.SIG_IGN


def install() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C (raise :class:`Interrupted`) in this process.

    Called once by the command line's entry point; a no-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        if not _ignored(signum):
            signal.signal(signum, _raise)


@contextlib.contextmanager
def deferred(note: Callable[[int], None]) -> Iterator[None]:
    """Within the block, INT/TERM/HUP only call ``note(signum)``: for the short, last steps that
    must not be cut in half (closing a video file), so an output is either whole or absent."""
    with _handlers(lambda signum, frame: note(signum)):
        yield


@contextlib.contextmanager
def _handlers(handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: Dict[int, object] = {}
    for signum in HANDLED:
        if not _ignored(signum):
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def graceful(first: Callable[[int], None]) -> Iterator[None]:
    """Within the block, the first INT/TERM/HUP calls ``first(signum)`` (finish what is in flight);
    a second raises :class:`Interrupted`. The previous handlers are restored on exit. Outside the
    main thread (where Python cannot install handlers) it does nothing."""
    received = []

    def handler(signum, frame) -> None:
        received.append(signum)
        if len(received) == 1:
            first(signum)
        else:
            raise Interrupted(signum)

    with _handlers(handler):
        yield
