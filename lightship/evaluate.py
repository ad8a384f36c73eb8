"""Evaluate a run folder or a lightship weights file on a dataset's test split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from lightship.data import load_dataset
from lightship.errors import UserError
from lightship.models import create_model
from lightship.recipe import Recipe, load_saved_recipe
from lightship.runs import RunPaths
from lightship.train.checkpoint import load_weights, read_weights
from lightship.train.loop import evaluate
from lightship.train.precision import choose_device, choose_precision


def _weights_of_run(paths: RunPaths) -> Path:
    if paths.weights.exists():
        return paths.weights
    if paths.last.exists():  # an unfinished run: its last checkpoint
        tag = json.loads(paths.last.read_text())["tag"]
        ema = paths.checkpoints / f"{tag}.ema.safetensors"
        return ema if ema.exists() else paths.checkpoints / f"{tag}.safetensors"
    raise UserError(f"{paths.root} has no weights yet (no weights.safetensors, no checkpoint)")


@dataclass
class ModelSource:
    """Where a trained model comes from: its architecture options, weights file and metadata."""

    options: dict[str, Any]
    weights: Path
    meta: dict[str, Any]
    recipe: Recipe | None  # set when the source is a run folder

    @property
    def name(self) -> str:
        return self.options["name"]

    def build(self, num_classes: int, in_chans: int, input_size: int) -> nn.Module:
        """The registry model these weights belong to, with the weights loaded (safetensors)."""
        options = {k: v for k, v in self.options.items() if k != "name"}
        model = create_model(self.name, num_classes, in_chans, input_size, **options)
        load_weights(model, self.weights)
        return model


def resolve_source(target: Path, role: str = "target") -> ModelSource:
    """Resolve a run folder or a lightship .safetensors file to a :class:`ModelSource`."""
    if not target.exists():
        raise UserError(f"{role} {target} does not exist; give a run folder or a .safetensors file")
    if target.is_dir():
        paths = RunPaths(target)
        if not paths.is_run():
            raise UserError(f"{role} {target} is not a lightship run folder (no recipe.yaml); "
                            "give a folder made by `lightship train` or a .safetensors file")
        recipe = load_saved_recipe(paths.recipe)
        weights = _weights_of_run(paths)
        _, meta = read_weights(weights)
        return ModelSource(recipe.model.model_dump(), weights, meta, recipe)
    _, meta = read_weights(target)
    if meta.get("format") != "lightship-weights-1":
        hint = (" or name its architecture with --teacher-model NAME (method.teacher.model)"
                if role == "teacher" else "")
        raise UserError(f"{role} {target} has no lightship metadata (model name, preprocessing); "
                        f"use the run folder it came from instead{hint}")
    return ModelSource(dict(meta["model_options"]), target, meta, None)


def check_fits(meta: dict[str, Any], weights: Path, data: str, info: Any) -> None:
    """Refuse data whose class count or input shape differs from what the weights were trained
    on, before any model is built (else the message would be a state-dict shape mismatch)."""
    k = meta.get("num_classes")
    if k not in (None, info.num_classes):
        raise UserError(f"{weights} predicts {k} classes but {data} has {info.num_classes}; "
                        "evaluate it on the dataset it was trained for")
    c, s = meta.get("in_chans"), meta.get("input_size")
    if c not in (None, info.in_chans) or s not in (None, info.input_size):
        raise UserError(f"{weights} was trained on {c}×{s}×{s} inputs but {data} gives "
                        f"{info.in_chans}×{info.input_size}×{info.input_size}; evaluate it on "
                        "the dataset it was trained for (or data of that shape)")


def evaluate_target(target: Path, data: str | None = None, batch_size: int = 512,
                    device: str = "auto") -> dict[str, Any]:
    """Evaluate ``target`` (run folder or .safetensors) on ``data`` (default: its own dataset)."""
    src = resolve_source(target)
    weights, recipe = src.weights, src.recipe
    if recipe is not None:
        data = data or recipe.data.name
        subset = {"fraction": recipe.data.fraction, "max_per_class": recipe.data.max_per_class,
                  "seed": recipe.data.seed, "image_size": recipe.data.image_size}
    else:
        data = data or src.meta["data"]
        subset = {"image_size": src.meta.get("input_size")}
    dataset = load_dataset(data, **{k: v for k, v in subset.items() if v is not None})
    info = dataset.info
    check_fits(src.meta, weights, data, info)
    model = src.build(info.num_classes, info.in_chans, info.input_size)
    dev = choose_device(device)
    prec = choose_precision("auto", "auto", dev)
    model = model.to(dev, memory_format=prec.memory_format)
    dataset.to(dev)
    res = evaluate(model, dataset, prec, batch_size, tta=recipe.train.tta if recipe else False)
    return {"model": src.name, "data": info.name, "n_test": info.n_test, "weights": str(weights),
            **res}
