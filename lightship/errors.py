"""User-facing errors.

Anything the user can fix (a bad recipe value, a missing path, a corrupt file) raises
:class:`UserError`. The CLI prints its message as one line and exits with code 2, without a
traceback. Library callers get an ordinary exception they can catch.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
from typing import Any


class UserError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or, under the CLI, SIGTERM) during a run; the message says what the run folder
    holds and how to go on. A KeyboardInterrupt still, so code that catches Exception never
    swallows it. The CLI exits with :func:`lightship.interrupt.exit_code` (130, 143 after
    SIGTERM)."""

    exit_code = 130


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` suffix for the closest choice, or ``""``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def exception_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for a one-line error."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 8
_SHORT.maxlevel = 3


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error line, at most ``limit`` characters: a value the user gave may
    be huge (a long list, YAML aliases), and a one-line error must stay one short line. Built by
    :mod:`reprlib`, so the full repr of a huge value is never made."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
