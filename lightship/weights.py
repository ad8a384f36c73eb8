"""A trained model on disk: the weights format and its metadata, where a run keeps its weights,
and whether a weights file fits a dataset.

Weights are safetensors files whose metadata (JSON-encoded values) names the architecture and the
preprocessing, so a file can be evaluated, exported or used as a teacher without its run folder.
Nothing is ever unpickled. This is the one home of:

* :func:`weights_metadata` — what a weights file records (format ``lightship-weights-1``);
* :func:`save_weights` / :func:`read_weights` / :func:`load_weights`;
* :class:`ModelSource` and :func:`resolve_source` — "which weights does this run folder or file
  hold, and which model do they belong to";
* :func:`check_fits` — "does this model fit this data" (class count, input shape);
* :func:`load_plain` — ``torch.load(weights_only=True)``: tensors and plain containers, never code.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from lightship.errors import UserError
from lightship.fileio import atomic_write, user_path
from lightship.runs import RunPaths

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lightship.data import DatasetInfo
    from lightship.recipe import Recipe

WEIGHTS_FORMAT = "lightship-weights-1"


def weights_metadata(recipe: Recipe, info: DatasetInfo) -> dict[str, Any]:
    """What a weights file needs to be used elsewhere: architecture, preprocessing, and whether
    the run's last evaluation used test-time augmentation (``tta``), so that ``lightship eval``
    of the file scores it as ``lightship eval`` of its run folder does."""
    return {
        "format": WEIGHTS_FORMAT,
        "model": recipe.model.name,
        "model_options": recipe.model.architecture(),
        "init": recipe.model.init,
        "num_classes": info.num_classes,
        "in_chans": info.in_chans,
        "input_size": info.input_size,
        "mean": list(info.mean),
        "std": list(info.std),
        "classes": list(info.classes),
        "data": recipe.data.name,
        "data_options": {"classes": recipe.data.classes, "image_size": recipe.data.image_size},
        "tta": recipe.train.tta_at(recipe.train.epochs),
    }


def save_weights(path: Path, module: nn.Module, metadata: dict[str, Any] | None = None) -> None:
    """Save a module's state_dict as safetensors (metadata values JSON-encoded), atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file: (tensors, decoded metadata). Corrupt files are a UserError."""
    if not path.exists():
        raise UserError(f"weights file {path} does not exist; check the path")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a readable safetensors file ({reason}); "
                        "point to a weights file written by lightship or safetensors") from None
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    return tensors, meta


def load_weights(module: nn.Module, path: Path) -> dict[str, Any]:
    """Load safetensors weights into ``module``; a mismatch names the architecture problem."""
    tensors, meta = read_weights(path)
    own = module.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    wrong = [k for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        arch = meta.get("model", "another architecture")
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, "
                  f"{len(wrong)} wrong-shape tensors")
        raise UserError(f"{path} holds weights of {arch} ({detail}); load it with the model it "
                        "was trained with")
    module.load_state_dict(tensors)
    return meta


def load_reason(exc: Exception) -> str:
    """The telling part of a torch.load failure (weights_only errors start with boilerplate)."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if found:
        return found.group(1).split(" was not an allowed global")[0].strip()[:120]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = [ln for ln in lines[1:] if not ln.startswith("Check the documentation")]
        if lines:
            return lines[0].split(" whose module")[0][:120]
        return "it names objects other than plain tensors"
    first = lines[0][:120] if lines else ""
    return f"{type(exc).__name__}: {first}" if len(first) < 30 else first


def load_plain(path: Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only. A file that
    holds code (a pickled object with ``__reduce__``), a torn or a foreign file is a one-line
    UserError ("refusing to load PATH: WHAT (reason); FIX"); nothing in it is executed."""
    import torch

    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn and foreign files fail in many exception types
        raise UserError(f"refusing to load {path}: {what} ({load_reason(exc)}); {fix}") from None


def weights_of_run(paths: RunPaths) -> Path:
    """The weights a run folder holds: the final file, else its last checkpoint's (EMA first)."""
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
        from lightship.models import create_model

        options = {k: v for k, v in self.options.items() if k != "name"}
        model = create_model(self.name, num_classes, in_chans, input_size, **options)
        load_weights(model, self.weights)
        return model


def resolve_source(target: Path | str, role: str = "target") -> ModelSource:
    """Resolve a run folder or a lightship .safetensors file to a :class:`ModelSource`."""
    from lightship.recipe import load_saved_recipe

    target = user_path(target)
    if not target.exists():
        raise UserError(f"{role} {target} does not exist; give a run folder or a .safetensors file")
    if target.is_dir():
        paths = RunPaths(target)
        if not paths.is_run():
            raise UserError(f"{role} {target} is not a lightship run folder (no recipe.yaml); "
                            "give a folder made by `lightship train` or a .safetensors file")
        recipe = load_saved_recipe(paths.recipe)
        weights = weights_of_run(paths)
        _, meta = read_weights(weights)
        return ModelSource(recipe.model.architecture(), weights, meta, recipe)
    _, meta = read_weights(target)
    if meta.get("format") != WEIGHTS_FORMAT:
        hint = (" or name its architecture with --teacher-model NAME (method.teacher.model)"
                if role == "teacher" else "")
        raise UserError(f"{role} {target} has no lightship metadata (model name, preprocessing); "
                        f"use the run folder it came from instead{hint}")
    return ModelSource(dict(meta["model_options"]), target, meta, None)


# How each role words a misfit: (classes message, shape message). {who} is the weights, {data}
# the dataset, {k}/{n} class counts, {c}/{s} and {c2}/{s2} trained and given channels/size.
_MISFIT = {
    "teacher": ("teacher predicts {k} classes but the data has {n}; use a teacher trained on "
                "this dataset",
                "teacher expects {c}×{s}² inputs but the data gives {c2}×{s2}²; use a teacher "
                "trained at this input shape"),
    "eval": ("{who} predicts {k} classes but {data} has {n}; evaluate it on the dataset it was "
             "trained for",
             "{who} was trained on {c}×{s}×{s} inputs but {data} gives {c2}×{s2}×{s2}; evaluate "
             "it on the dataset it was trained for (or data of that shape{resize})"),
    "probe": ("{who} was trained on {trained} ({k} classes, {c} channels); probe it with --data "
              "set to that dataset", None),
}


def check_fits(meta: dict[str, Any], info: DatasetInfo, role: str, who: Any = "",
               data: str = "") -> None:
    """Refuse data whose class count or input shape differs from what the weights were trained
    on, before any model is built (else the message would be a state-dict shape mismatch).

    ``role`` (teacher, eval, probe) picks the wording and the fix; a probe builds the model at
    the data's own input size, so only classes and channels must match there. Data is never
    resized to fit on its own: for eval that takes ``--image-size``.
    """
    k, c, s = meta.get("num_classes"), meta.get("in_chans"), meta.get("input_size")
    classes_msg, shape_msg = _MISFIT[role]
    words = dict(who=who, data=data, k=k, n=info.num_classes, c=c, s=s, c2=info.in_chans,
                 s2=info.input_size, trained=meta.get("data"),
                 resize=f", or resize it with --image-size {s}" if c == info.in_chans else "")
    if shape_msg is None:  # classes and channels only
        if k not in (None, info.num_classes) or c not in (None, info.in_chans):
            raise UserError(classes_msg.format(**words))
        return
    if k not in (None, info.num_classes):
        raise UserError(classes_msg.format(**words))
    if c not in (None, info.in_chans) or s not in (None, info.input_size):
        raise UserError(shape_msg.format(**words))
