"""Capture intermediate outputs with forward hooks, without editing the model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lightship.errors import UserError, closest


class Taps:
    """Record the outputs of named submodules on every forward.

    ``names`` are paths from ``model.named_modules()`` (e.g. ``'layer2'`` or ``'layer2.0.conv1'``).
    ``taps.features[name]`` holds the latest output, not detached (feature losses need the
    gradient). Use as a context manager, or call :meth:`remove` when done.

    Example::

        with Taps(model, ["layer1", "layer3"]) as taps:
            logits = model(x)
        taps.features["layer3"].shape
    """

    def __init__(self, model: nn.Module, names: list[str] | str) -> None:
        names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        modules = dict(model.named_modules())
        modules.pop("", None)  # the model itself: its output is the forward's return value
        stages = list(getattr(model, "stage_names", None) or [n for n, _ in model.named_children()])
        for name in names:
            if name not in modules:
                raise UserError(f"no module '{name}' to tap{closest(name, stages)}; stages: "
                                f"{', '.join(stages)} (or any path in model.named_modules())")
        self.names = names
        self.features: dict[str, Any] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def store(module: nn.Module, args: Any, output: Any) -> None:
            self.features[name] = output

        return store

    def clear(self) -> None:
        """Forget the recorded outputs (hooks stay)."""
        self.features.clear()

    def remove(self) -> None:
        """Unregister every hook; recorded outputs stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> Taps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def default_pairs(student: nn.Module, teacher: nn.Module, term: str = "at"
                  ) -> list[tuple[str, str]]:
    """(student, teacher) stages named alike in both (layer1, layer2, ...); ``term`` names the
    method (and its pairs option) in the error."""
    names = [n for n in getattr(student, "stage_names", []) if n.startswith("layer")]
    shared = [n for n in names if n in getattr(teacher, "stage_names", [])]
    if not shared:
        option = "adv_pairs" if term == "adversarial" else "at_pairs"
        raise UserError(f"method `{term}` found no stages named alike in student and teacher; set "
                        f"method.{option}=[[student_module, teacher_module], ...]")
    return [(n, n) for n in shared]


def feature_channels(net: nn.Module, names: list[str], in_chans: int, size: int,
                     device: torch.device) -> list[int]:
    """Channel counts of the named modules' outputs, from one dry forward of a blank batch."""
    was_training = net.training
    net.eval()
    with Taps(net, names) as taps, torch.no_grad():
        net(torch.zeros(2, in_chans, size, size, device=device))
        channels = [taps.features[n].shape[1] for n in names]
    net.train(was_training)
    return channels
