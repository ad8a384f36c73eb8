"""Ctrl-C and SIGTERM: the run stops promptly and the CLI prints one line and exits 130 (143).

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread happens to be. Two
places lose it: code Python runs as a finalizer or fork hook, where it prints "Exception ignored
in ..." and carries on (a DataLoader starts and stops its workers there), and the DataLoader
workers, which get the terminal's SIGINT too, die, and make the loader report a dead worker
instead. Inside :func:`handled` (the CLI) the handler remembers the interrupt, leaves forked
children alone (the main process stops them) and, within :func:`deferred` blocks, holds the
interrupt back until the block ends (a second Ctrl-C does not wait). SIGTERM, which `timeout`,
systemd, Slurm and Kubernetes send, takes the same path (a KeyboardInterrupt, so every "how to go
on" line is the same), with its own word and exit code (:func:`stopped`, :func:`exit_code`).
Library callers keep Python's handlers.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_owner: int | None = None  # the process the handler serves; forked children inherit it
_hit = 0  # the signal (SIGINT, SIGTERM) that asked to stop since handled() began; 0: none
_defer = 0  # depth of deferred() blocks


def _handler(signum, frame) -> None:
    global _hit
    if os.getpid() != _owner:  # a forked DataLoader worker: the main process shuts it down
        return  # (a worker killed by a SIGTERM sent to every process made torch complain)
    again = bool(_hit)
    _hit = _hit or signum
    if not _defer or again:  # a second signal does not wait
        raise KeyboardInterrupt


@contextmanager
def handled() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM are remembered as well as raised (main thread only;
    SIGTERM only where nobody else handles or ignores it)."""
    global _owner, _hit
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # someone else handles SIGINT (or cannot here): leave it to them
        return
    _owner, _hit = os.getpid(), 0
    term = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, _handler)
    if term == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, term)
        _owner, _hit = None, 0  # library code after the block must not see this stop


def interrupted() -> bool:
    """Whether a Ctrl-C or SIGTERM arrived (a failure that follows it is its effect, not the
    data's)."""
    return bool(_hit)


def stopped() -> str:
    """How the run was stopped, for the first word of its line: ``terminated`` after SIGTERM,
    else ``interrupted``."""
    return "terminated" if _hit == signal.SIGTERM else "interrupted"


def exit_code() -> int:
    """The exit status of a stopped command: 128 + the signal, 130 for Ctrl-C, 143 for
    SIGTERM (as a shell reports a process the signal ended)."""
    return 128 + int(_hit or signal.SIGINT)


def check() -> None:
    """Raise the KeyboardInterrupt of a Ctrl-C that was held back or swallowed."""
    if _hit:
        raise KeyboardInterrupt


@contextmanager
def deferred(then_raise: bool = True) -> Iterator[None]:
    """Hold Ctrl-C back while the block runs (fork hooks, finalizers, replacing a folder); then
    raise it, unless ``then_raise`` is False (a block that may run as a finalizer, where the
    raise would be lost: a later :func:`check` raises it)."""
    global _defer
    _defer += 1
    try:
        yield
    finally:
        _defer -= 1
    if then_raise:
        check()


@contextmanager
def spawning() -> Iterator[None]:
    """Start processes that run Python afresh (spawn) inside this block: SIGINT is blocked here
    meanwhile, and they inherit the blocked signal through exec, so a Ctrl-C while they import
    (seconds, for torch) prints no traceback of theirs; :func:`ignore_in_worker` then ignores it
    for good. This process gets a Ctrl-C of that time when the block ends, and stops them."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no signal masks
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_in_worker(worker_id: int = 0) -> None:
    """A worker process ignores Ctrl-C (the main process stops it): a DataLoader
    ``worker_init_fn`` (workers started without fork, spawn or forkserver, do not inherit the
    handler) and a study's pool initializer (started in :func:`spawning`; a Ctrl-C held back
    since is dropped here)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
