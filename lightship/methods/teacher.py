"""The frozen teacher: loaded from a run folder or a weights file and checked against the data."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from torch import nn

from lightship.errors import UserError
from lightship.fileio import user_path
from lightship.weights import ModelSource, check_fits, resolve_source

if TYPE_CHECKING:
    from lightship.recipe import MethodCfg


def load_teacher(cfg: MethodCfg, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    """Build the frozen teacher from a run folder or a lightship weights file; check it fits."""
    t = cfg.teacher
    if (t.run is None) == (t.weights is None):
        raise UserError(f"method {cfg.name} needs exactly one teacher: give --teacher RUN_DIR "
                        "(or set method.teacher.run=RUN_DIR or "
                        "method.teacher.weights=FILE.safetensors)")
    if t.model is not None:  # a plain state_dict: the architecture comes from the recipe
        if t.weights is None:
            raise UserError("method.teacher.model names the architecture of a plain weights file; "
                            "use it with --teacher FILE.safetensors (a run folder knows its own)")
        src = ModelSource({"name": t.model}, user_path(t.weights), {}, None)
    else:
        src = resolve_source(t.run if t.run is not None else t.weights, role="teacher")
    check_fits(src.meta, SimpleNamespace(num_classes=num_classes, in_chans=in_chans,
                                         input_size=input_size), "teacher")
    teacher = src.build(num_classes, in_chans, input_size)
    teacher.requires_grad_(False)
    teacher.train(t.train_bn)
    return teacher
