"""Start from pretrained weights and fine-tune: ``model.init`` and the ``finetune`` section.

He, Girshick & Dollár 2019 ("Rethinking ImageNet Pre-training") compare fine-tuning a pretrained
net with training from scratch; this module is the fine-tuning side:

* :func:`read_init` — a run folder, a lightship ``.safetensors`` or a plain state_dict
  (``.safetensors``, ``.pt``/``.pth`` read with ``weights_only=True``) → tensors plus the sha256
  of the file read (the run records both, so the run can be repeated);
* :func:`apply_init` — tensors match the student by name and shape; the classifier head is
  re-initialised when its class count differs (or ``finetune.reinit_head``); a first conv of
  another channel count is adapted 1 ↔ 3 (:func:`adapt_input_conv`); anything else that does not
  fit is another architecture, refused before any run folder exists;
* :func:`freeze` — ``finetune.freeze`` prefixes and ``finetune.freeze_bn``;
* :func:`lr_multipliers` — ``finetune.backbone_lr_mult`` / ``head_lr_mult`` per parameter, which
  :func:`lightship.train.optim.param_groups` turns into optimizer groups.

Which weights a run folder holds, and how a file is read, stay in :mod:`lightship.weights`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lightship.errors import UserError
from lightship.fileio import user_path
from lightship.recipe import FinetuneCfg, Recipe
from lightship.runs import RunPaths, how_to_continue
from lightship.weights import load_plain, read_weights, resolve_source

PLAIN_SUFFIXES = (".pt", ".pth")


@dataclass
class InitFile:
    """Initial weights read from disk: the tensors, their metadata (lightship files), the file
    actually read (a run folder's weights) and its sha256."""

    source: str
    file: Path
    tensors: dict[str, Tensor]
    meta: dict[str, Any]
    sha256: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain_state_dict(path: Path) -> dict[str, Tensor]:
    """A ``.pt``/``.pth`` state_dict read as plain tensors; pickled objects are refused unrun."""
    obj = load_plain(path, "not a plain state_dict of tensors",
                     "init files are read as plain tensors only, never as code; save "
                     "model.state_dict() (or use .safetensors)")
    if isinstance(obj, dict) and not any(isinstance(v, Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj \
            or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise UserError(f"init {path} is not a state_dict (a dict of named tensors); save "
                        "model.state_dict() with torch.save or safetensors")
    return obj


def read_init(source: str | Path) -> InitFile:
    """Read the weights ``model.init`` names (see the module docstring); nothing is unpickled."""
    path = user_path(source)
    if not path.exists():
        raise UserError(f"init {source} does not exist; give a run folder, a .safetensors file "
                        "or a .pt/.pth state_dict")
    if path.is_dir():
        root, path = path, resolve_source(path, role="init").weights
        if path != RunPaths(root).weights:  # an unfinished run: never its checkpoint unasked
            raise UserError(f"init {source} has no final weights.safetensors (the run has not "
                            f"finished); to start from its last checkpoint, name it: --init "
                            f"{path}; or finish the run first ({how_to_continue(root)})")
    if path.suffix == ".safetensors":
        tensors, meta = read_weights(path)
    elif path.suffix in PLAIN_SUFFIXES:
        tensors, meta = _plain_state_dict(path), {}
    else:
        raise UserError(f"init {source}: unknown weights format '{path.suffix}'; give a run "
                        "folder, a .safetensors file or a .pt/.pth state_dict")
    return InitFile(str(source), path, tensors, meta, _sha256(path))


def head_prefix(model: nn.Module) -> str | None:
    """The classifier head: the last ``nn.Linear`` (``fc`` in lightship's nets)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _under(name: str, prefix: str | None) -> bool:
    return prefix is not None and (name == prefix or name.startswith(prefix + "."))


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """A first-conv weight for ``in_chans`` inputs, as timm's ``adapt_input_conv`` does:
    3 → 1 sums over the input channels; 1 → 3 repeats and divides by 3, so a grey image
    replicated to 3 channels gives the same output."""
    w = weight.float()
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, in_chans, 1, 1) / in_chans
    return w.to(weight.dtype)


def _renamer(file_keys: list[str], own: dict[str, Tensor]) -> Callable[[str], str]:
    """The key mapping that matches most names: as is, or across a ``model.`` wrapper prefix
    (lightship wraps timm/torchvision nets) or DDP's ``module.``."""
    options: list[Callable[[str], str]] = [
        lambda k: k, lambda k: f"model.{k}", lambda k: k.removeprefix("module."),
        lambda k: k.removeprefix("model.")]
    return max(options, key=lambda fn: sum(fn(k) in own for k in file_keys))


@dataclass
class InitReport:
    """What :func:`apply_init` did, for the console and the start record."""

    loaded: list[str]
    total: int
    skipped: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    head: str = ""

    def line(self) -> str:
        text = f"loaded {len(self.loaded)} of {self.total} tensors"
        if self.head:
            text += f"; {self.head}"
        if self.adapted:
            text += f"; adapted input channels of {', '.join(self.adapted)}"
        return text


def apply_init(model: nn.Module, init: InitFile, model_name: str, reinit_head: bool = False,
               classes: tuple[str, ...] | None = None) -> InitReport:
    """Load ``init``'s tensors into ``model`` by name and shape (see the module docstring).

    The head is re-initialised when its shape differs, with ``reinit_head``, and when the file's
    metadata names other classes than ``classes`` (same count, other meaning: 0–4 vs 5–9).
    Raises a one-line UserError naming the file and the model when the backbone does not fit.
    """
    own = model.state_dict()
    trained_on = init.meta.get("classes")
    other_classes = bool(classes and trained_on and list(trained_on) != list(classes))
    rename = _renamer(list(init.tensors), own)
    given = {rename(k): v for k, v in init.tensors.items()}
    head = head_prefix(model)
    first_conv = next((k for k, v in own.items() if v.ndim == 4), None)
    load: dict[str, Tensor] = {}
    report = InitReport(loaded=[], total=len(own))
    missing, wrong = [], []
    for key, mine in own.items():
        theirs = given.get(key)
        if _under(key, head):
            if theirs is not None and theirs.shape == mine.shape and not reinit_head \
                    and not other_classes:
                load[key] = theirs
            else:
                report.reinitialised.append(key)
                if theirs is not None:
                    report.skipped.append(key)
        elif theirs is None:
            missing.append(key)
        elif theirs.shape == mine.shape:
            load[key] = theirs
        elif key == first_conv and theirs.shape[1] in (1, 3) and mine.shape[1] in (1, 3) \
                and theirs.shape[:1] + theirs.shape[2:] == mine.shape[:1] + mine.shape[2:]:
            load[key] = adapt_input_conv(theirs, mine.shape[1])
            report.adapted.append(key)
        else:
            wrong.append(key)
    extra = [k for k in given if k not in own]
    if missing or wrong or extra:
        arch = init.meta.get("model")
        holds = f"it holds {arch} weights" if arch else "another architecture"
        fit = sum(1 for k in own if k in load and not _under(k, head))
        backbone = sum(1 for k in own if not _under(k, head))
        raise UserError(f"init {init.source} does not fit {model_name}'s backbone ({holds}: "
                        f"{fit} of {backbone} backbone tensors match by name and shape, "
                        f"{len(missing)} missing, {len(wrong)} of another shape, {len(extra)} "
                        f"extra); give weights of {model_name} or set model.name to the file's "
                        "architecture")
    model.load_state_dict(load, strict=False)
    report.loaded = list(load)
    if report.reinitialised:
        mine_k = own[f"{head}.weight"].shape[0] if f"{head}.weight" in own else "?"
        theirs_w = given.get(f"{head}.weight")
        if reinit_head:
            report.head = "head re-initialised (finetune.reinit_head)"
        elif other_classes and theirs_w is not None and theirs_w.shape[0] == mine_k:
            report.head = (f"head re-initialised: other classes ({','.join(trained_on)} → "
                           f"{','.join(classes or ())})")
        elif theirs_w is not None:
            report.head = f"head re-initialised: {theirs_w.shape[0]} → {mine_k} classes"
        else:
            report.head = "head re-initialised (not in the file)"
    return report


def init_student(model: nn.Module, recipe: Recipe, classes: tuple[str, ...]
                 ) -> dict[str, Any] | None:
    """Load ``model.init`` into a freshly built student for data with these class names; the
    start record's ``init`` entry."""
    if recipe.model.init is None:
        return None
    init = read_init(recipe.model.init)
    report = apply_init(model, init, recipe.model.name, recipe.finetune.reinit_head, classes)
    return {"source": init.source, "file": str(init.file), "sha256": init.sha256,
            "loaded": len(report.loaded), "total": report.total, "skipped": report.skipped,
            "reinitialised": report.reinitialised, "adapted": report.adapted,
            "line": report.line()}


def _keep_eval(module: nn.Module, args: Any) -> None:
    module.train(False)  # frozen statistics: normalise with the running averages, never update


def _resolve_prefix(model: nn.Module, prefix: str, names: set[str]) -> str:
    for candidate in (prefix, f"model.{prefix}"):  # a wrapped net also takes its own names
        if candidate in names:
            return candidate
    top = ", ".join(n for n, _ in model.named_children())
    raise UserError(f"finetune.freeze: '{prefix}' names no module of the student; its modules "
                    f"start with: {top}")


def freeze(model: nn.Module, cfg: FinetuneCfg, model_name: str) -> list[str]:
    """Keep ``cfg.freeze`` prefixes (parameters and norm statistics) and, with
    ``cfg.freeze_bn``, every BatchNorm fixed. Returns the frozen parameter names."""
    names = {n for n, _ in model.named_modules()}
    prefixes = [_resolve_prefix(model, p, names) for p in cfg.freeze]
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if cfg.freeze_bn and not bns:
        raise UserError(f"finetune.freeze_bn: {model_name} has no BatchNorm layers (model.norm "
                        "is not bn); drop finetune.freeze_bn")
    frozen = {n for n in names if any(_under(n, p) for p in prefixes)}
    if cfg.freeze_bn:
        frozen.update(bns)
    modules = dict(model.named_modules())
    for name in sorted(frozen):
        module = modules[name]
        module.requires_grad_(False)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_keep_eval)
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def lr_multipliers(model: nn.Module, cfg: FinetuneCfg) -> dict[int, float] | None:
    """``id(parameter) → LR multiplier`` for the student (head vs backbone); None when both
    multipliers are 1 (one group as before)."""
    if cfg.backbone_lr_mult == 1 and cfg.head_lr_mult == 1:
        return None
    head = head_prefix(model)
    return {id(p): cfg.head_lr_mult if _under(n, head) else cfg.backbone_lr_mult
            for n, p in model.named_parameters()}
