"""Names a package exports but imports on first use (PEP 562), one helper for every package.

The CLI parser imports several packages on every command; binding their heavy names lazily keeps
torch-free commands and a training run's start-up from loading code they never call.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``homes[name]`` on first access: a module path,
    absolute or relative to ``package`` (``".html"``)."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(import_module(homes[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
