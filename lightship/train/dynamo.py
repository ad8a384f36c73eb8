"""Spare a run that never compiles torch's import of ``torch._dynamo`` (2.3–2.9 s here).

torch 2.x imports ``torch._dynamo`` — with sympy and the FX machinery, ~2,000 modules — from
code every training run calls, only to tell a compiler that is not running to keep out:

- every optimizer's ``step`` (``torch.optim.optimizer._use_grad_for_differentiable``) runs
  ``import torch._dynamo`` and ``torch._dynamo.graph_break()`` around the update;
- ``Optimizer.add_param_group``/``zero_grad``/``state_dict``/``load_state_dict`` and
  ``FlopCounterMode`` (used by :func:`lightship.models.model_stats`) are wrapped by
  ``torch._compile._disable_dynamo``, which imports it on the first call to build
  ``torch._dynamo.disable(fn)``.

Outside a ``torch.compile``/``torch.export`` trace both are no-ops: ``graph_break()`` does
nothing and ``disable(fn)`` only calls ``fn``. On the 2-core development CPU the import costs
2.3–2.9 s of wall time — more than half of ``import torch`` — in every run (benchmarks/startup.py);
upstream knows the cost (pytorch/pytorch#162595, "Don't unconditionally import torch._dynamo,
it's slow"). For the length of a run that does not compile, :func:`dynamo_import_skipped` puts
a stand-in module under the name ``torch._dynamo`` that answers exactly those two calls with
their outside-a-trace behaviour. Anything else asked of it (an attribute, a submodule import)
imports the real ``torch._dynamo`` there and then, so code that needs Dynamo still gets it.
On exit the stand-in is removed and the functions it was handed lose the "already disabled"
mark ``_disable_dynamo`` caches on them, so a later ``torch.compile`` in the same process
sees torch exactly as it would have without this module. No number changes
(tests/test_process_speed.py trains the same weights bit for bit both ways).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

_NAME = "torch._dynamo"
_CACHE = "__dynamo_disable"  # where torch._compile._disable_dynamo caches disable(fn)


class _StandIn(types.ModuleType):
    """``torch._dynamo`` while no trace can run: ``graph_break`` and ``disable`` only."""

    def __init__(self) -> None:
        super().__init__(_NAME, "lightship's stand-in for torch._dynamo (lightship.train.dynamo)")
        self.handed: list[Callable[..., Any]] = []  # functions given back by disable()
        self.real: types.ModuleType | None = None

    def graph_break(self) -> None:
        """Outside a trace, torch._dynamo.graph_break() does nothing."""

    def disable(self, fn: Callable[..., Any] | None = None, recursive: bool = True,
                wrapping: bool = True) -> Any:
        """Outside a trace, torch._dynamo.disable(fn) behaves as fn."""
        if fn is None:  # decorator form: disable(recursive=...)(fn)
            return lambda f: self.disable(f, recursive, wrapping)
        self.handed.append(fn)
        return fn

    def __getattr__(self, name: str) -> Any:  # anything else: the real torch._dynamo
        return getattr(_retire(self), name)


class _Existing(importlib.abc.Loader):
    """Hands the import system a module that is already loaded (it must not run twice)."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module, self.spec = module, getattr(module, "__spec__", None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.spec  # undo the import system's overwrite


class _SubmoduleFinder(importlib.abc.MetaPathFinder):
    """``import torch._dynamo.x`` while the stand-in is up: the real package, then x once."""

    def __init__(self, stand_in: _StandIn) -> None:
        self.stand_in = stand_in

    def find_spec(self, name: str, path: Any, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith(_NAME + "."):
            return None
        _retire(self.stand_in)
        loaded = sys.modules.get(name)
        if loaded is None:  # the real package did not import it: the normal finders will
            return None
        return importlib.machinery.ModuleSpec(name, _Existing(loaded))


def _retire(stand_in: _StandIn) -> types.ModuleType:
    """Replace the stand-in with the real torch._dynamo (imported now) and return it."""
    if stand_in.real is None:
        _withdraw(stand_in)
        stand_in.real = importlib.import_module(_NAME)
    return stand_in.real


def _withdraw(stand_in: _StandIn) -> None:
    """Take the stand-in out of sys.modules and torch, and drop the "disabled" mark
    _disable_dynamo cached on the functions it was handed."""
    import torch

    if sys.modules.get(_NAME) is stand_in:
        del sys.modules[_NAME]
    if torch.__dict__.get("_dynamo") is stand_in:
        del torch._dynamo
    for fn in stand_in.handed:
        if getattr(fn, _CACHE, None) is fn:
            delattr(fn, _CACHE)
    stand_in.handed.clear()


@contextlib.contextmanager
def dynamo_import_skipped(enabled: bool = True) -> Iterator[bool]:
    """Within the block, ``torch._dynamo`` is the stand-in (module doc); yields whether it is.

    Does nothing when ``enabled`` is false (a run that compiles) or ``torch._dynamo`` is
    already imported (the cost is paid).
    """
    if not enabled or _NAME in sys.modules:
        yield False
        return
    import torch

    stand_in = _StandIn()
    finder = _SubmoduleFinder(stand_in)
    sys.modules[_NAME] = stand_in
    torch._dynamo = stand_in  # type: ignore[attr-defined]
    sys.meta_path.insert(0, finder)
    try:
        yield True
    finally:
        sys.meta_path.remove(finder)
        if stand_in.real is None:
            _withdraw(stand_in)
