"""The typed recipe: everything a run needs, as plain YAML a person can read.

A recipe is built from a named preset (``baseline``, ``tricks``, ``default``) or a YAML file, then
``--set a.b=c`` overrides. Validation names the key, the bad value and what is allowed. The full
recipe (every field, defaults included) is saved in each run folder, so any run can be re-run.

Each Bag-of-Tricks switch (He et al. 2019, "Bag of Tricks for Image Classification with
Convolutional Neural Networks") is one field, defined once here with its source.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lightship.errors import UserError, closest


class _Section(BaseModel):
    # extra="forbid": a mistyped key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataCfg(_Section):
    name: str = "mnist5k"
    """Built-in name (`lightship data list`) or a path (CIFAR, MNIST IDX, ImageFolder, .npz)."""
    fraction: float = Field(1.0, gt=0, le=1)
    """Stratified subset of the training split (1.0, 0.1, 0.01: the low-data regimes of He et al.
    2019, "Rethinking ImageNet Pre-training")."""
    max_per_class: int | None = Field(None, ge=1)
    seed: int = 0
    """Seed of the subset draw (independent of the training seed)."""
    image_size: int | None = Field(None, ge=4)
    """ImageFolder only: images are resized to this square size."""
    workers: int = Field(2, ge=0)
    """ImageFolder only: DataLoader worker processes."""


class AugmentCfg(_Section):
    crop_padding: int | Literal["auto"] = "auto"
    """Random crop after zero padding; auto = input_size // 8 (4 px at 32, 3 at 28, 1 at 8)."""
    hflip: bool | Literal["auto"] = "auto"
    """Horizontal flip; auto = only where the dataset allows it (never for digits)."""
    cutout: int = Field(0, ge=0)
    """Cutout square side in pixels (DeVries & Taylor 2017); 0 = off."""
    rotate: float = Field(0.0, ge=0, le=180)
    """Random rotation, uniform in ±rotate degrees (small angles keep a digit's meaning; the
    classic MNIST distortions of Simard et al. 2003); 0 = off."""
    mixup_alpha: float = Field(0.0, ge=0)
    """Mixup Beta(α, α) (Zhang et al. 2018); Bag of Tricks uses α=0.2; 0 = off."""
    cutmix_alpha: float = Field(0.0, ge=0)
    """CutMix Beta(α, α) (Yun et al. 2019); 0 = off. With both on, each batch picks one."""
    mix_off_epochs: int = Field(0, ge=0)
    """Train the last N epochs without mixup/cutmix (clean targets for the final fit)."""


class ModelCfg(_Section):
    name: str = "resnet8"
    norm: Literal["bn", "gn", "syncbn", "none"] = "bn"
    gn_groups: int = Field(8, ge=1)
    zero_gamma: bool = False
    """γ=0 for the last norm of every residual block (Goyal et al. 2017; Bag of Tricks §3.1)."""
    shortcut: Literal["A", "B"] = "A"
    """CIFAR ResNet shortcut: A = identity + zero padding, B = 1×1 projection (He et al. 2016)."""
    variant: Literal["v1", "B", "C", "D"] = "v1"
    """ImageNet ResNet variant (Bag of Tricks §4.1)."""
    plain: bool = False
    """The same net without shortcuts (the degradation experiment)."""
    width: float = Field(1.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)


class OptimCfg(_Section):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    """Base learning rate (before linear scaling)."""
    lr_scaling: bool = False
    """Linear scaling rule: lr = lr × batch_size / reference_batch (Goyal et al. 2017)."""
    reference_batch: int = Field(256, ge=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    no_bias_decay: bool = False
    """No weight decay on biases and norm parameters (Bag of Tricks §3.1)."""
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = Field(None, gt=0)
    """Clip the global gradient norm to this value; None = no clipping (the norm is logged)."""


class ScheduleCfg(_Section):
    name: Literal["cosine", "step", "multistep", "linear", "constant"] = "cosine"
    """Updated every step, not every epoch."""
    warmup_epochs: float = Field(0.0, ge=0)
    """Linear warmup from warmup_start × lr to lr (Goyal et al. 2017; Bag of Tricks §3.1)."""
    warmup_start: float = Field(0.0, ge=0, lt=1)
    """Warmup starting factor; 0 starts at lr / warmup_steps (the first step is never lr = 0)."""
    step_epochs: float = Field(30, gt=0)
    """`step`: decay by gamma every step_epochs."""
    milestones: list[float] | None = None
    """`multistep`: epochs where lr *= gamma; None = 50 % and 75 % of training (He et al. 2016)."""
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0)
    """Final lr of `cosine` and `linear`, as a fraction of the peak lr."""


class TeacherCfg(_Section):
    run: str | None = None
    """A lightship run folder whose final weights teach (its recipe gives the architecture)."""
    weights: str | None = None
    """A lightship .safetensors weights file (its metadata gives the architecture)."""
    model: str | None = None
    """Architecture of a `weights` file that has no lightship metadata (a plain safetensors
    state_dict): a registry name, `timm:NAME` or `torchvision:NAME`, built for the data's classes
    and input shape."""
    train_bn: bool = False
    """Keep the teacher's BatchNorm in train mode (batch statistics); default eval mode."""
    cache: bool = False
    """Compute the teacher's logits once per training image and reuse them. Only with
    augmentation and mixup/cutmix off and logit terms (kd, hint, dkd): with augmentation every
    view needs its own teacher output, and a fixed-view teacher teaches worse (Beyer et al. 2022,
    "Knowledge distillation: A good teacher is patient and consistent")."""


METHOD_TERMS = ("kd", "hint", "at", "dkd", "dml", "rocket", "adversarial")
TEACHER_TERMS = ("kd", "hint", "at", "dkd", "adversarial")
"""Terms that learn from a frozen teacher; `dml` (peers) and `rocket` (booster) need none."""


class MethodCfg(_Section):
    name: str = "supervised"
    """`supervised`, or terms joined by '+': kd, hint, at, dkd, dml, rocket, adversarial."""
    alpha: float = Field(0.9, ge=0, le=1)
    """`kd`: loss = (1 − α)·CE + α·KD (α on KD; RepDistiller's defaults -r 0.1 -a 0.9)."""
    T: float = Field(4.0, gt=0)
    """Softmax temperature of `kd` and `dkd` (Hinton et al. 2015; 4 in RepDistiller/DKD)."""
    hint_weight: float = Field(0.01, ge=0)
    """`hint`: weight of the logit MSE. Measured on MNIST-5k (SGD lr 0.1, resnet8 teacher): 1.0
    diverged (NaN in epoch 1): the sum-reduced MSE's gradient is ~|z_s − z_t| per logit, tens of
    times CE's; 0.01 keeps it on CE's scale."""
    hint_reduction: Literal["sum", "mean"] = "sum"
    """`hint`: sum over classes then batch mean (as in the Rocket code), or mean over all."""
    at_beta: float = Field(1000.0, ge=0)
    """`at`: β of attention transfer (Zagoruyko & Komodakis 2017 use 1e3)."""
    at_pairs: list[tuple[str, str]] | None = None
    """(student module, teacher module) pairs; None = stages named alike in both (layer1..)."""
    dkd_alpha: float = Field(1.0, ge=0)
    dkd_beta: float = Field(8.0, ge=0)
    dkd_warmup: int = Field(20, ge=0)
    """Epochs of linear warm-up of the DKD weight (Zhao et al. 2022)."""
    peers: int = Field(1, ge=1)
    """`dml`: trainable peers besides the student (Zhang et al. 2018 use 1 to 4)."""
    peer_model: str | None = None
    """`dml`: the peers' architecture; None = the student's."""
    dml_T: float = Field(1.0, gt=0)
    """`dml`: softmax temperature of the mutual KL terms (1 in the paper)."""
    booster: str | None = None
    """`rocket`: the booster net, a deeper net of the student's family (resnet20 → resnet56,
    wrn-16-1 → wrn-40-1)."""
    share: Literal["bottom", "interval"] = "bottom"
    """`rocket` layer sharing: bottom = stem and the student's first stage; interval = the first
    block of every stage."""
    share_bn: bool = False
    """`rocket`: share the norm layers of shared blocks too (default: conv weights only)."""
    gradient_block: bool = True
    """`rocket`: the hint does not update the booster's own parameters (booster logits detached);
    False = `none`, the hint pulls both nets."""
    rocket_lambda: float = Field(0.01, ge=0)
    """`rocket`: λ of the logit hint λ·‖z_light − z_booster‖² (sum over classes, batch mean).
    Measured on MNIST-5k (resnet8×0.25 with a resnet20×0.25 booster, SGD lr 0.1): λ=1 diverged
    in epoch 2, λ=0.1 cost 6 points of test top-1; 0.01 trains stably."""
    adv_pairs: list[tuple[str, str]] | None = None
    """`adversarial`: (student module, teacher module) feature pairs; None = the last stage the two
    nets name alike."""
    adv_loss: Literal["wgan", "hinge", "bce"] = "wgan"
    """`adversarial`: Wasserstein with weight clipping (Arjovsky et al. 2017), hinge, or BCE."""
    adv_weight: float = Field(0.1, ge=0)
    """`adversarial`: weight of the student's adversarial term."""
    adv_lr: float = Field(1e-4, gt=0)
    """`adversarial`: the discriminators' own LR (RMSprop for wgan, Adam otherwise)."""
    adv_clip: float = Field(0.01, gt=0)
    """`adversarial` wgan: discriminator weights clipped to [−c, c] after every update."""
    adv_cos: float = Field(0.0, ge=0)
    """`adversarial`: weight of an extra 1 − cos(student, teacher) feature term; 0 = off."""
    teacher: TeacherCfg = TeacherCfg()

    @field_validator("name")
    @classmethod
    def _known_terms(cls, name: str) -> str:
        if name == "supervised":
            return name
        for term in name.split("+"):
            if term not in METHOD_TERMS:
                raise ValueError(f"method '{term}' is unknown{closest(term, METHOD_TERMS)}; "
                                 f"use supervised or a '+'-joined set of {', '.join(METHOD_TERMS)}")
        return name

    @model_validator(mode="after")
    def _partners(self) -> MethodCfg:
        if "rocket" in self.terms and not self.booster:
            raise ValueError("method rocket needs a booster net of the student's family: set "
                             "method.booster (e.g. resnet56 for a resnet20 student)")
        return self

    @property
    def terms(self) -> list[str]:
        return [] if self.name == "supervised" else self.name.split("+")

    @property
    def needs_teacher(self) -> bool:
        return any(term in TEACHER_TERMS for term in self.terms)


class TrainCfg(_Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """ε of label smoothing (Szegedy et al. 2016; Bag of Tricks §5.2 uses 0.1)."""
    ema: float | None = Field(None, gt=0, lt=1)
    """Decay of an exponential moving average of the weights; evaluation uses the average."""
    tta: bool = False
    """Test-time augmentation: every evaluation predicts with the mean softmax over the image
    and its four 1-pixel translations (no flips: they change digits). Costs 5 forward passes
    per test image; `lightship eval` of the run folder uses it too."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto = bf16 autocast on GPUs that support it, fp32 on CPUs without native bf16
    (measured 4–15× slower there; benchmarks/precision.py)."""
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    device: str = "auto"
    seed: int = 0
    eval_every: int = Field(1, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    """Write a checkpoint every N epochs (and always at the end)."""
    on_nonfinite: Literal["stop", "skip"] = "stop"


class RunCfg(_Section):
    name: str | None = None
    """Run folder name under dir; None = <model>_<data>_<timestamp>."""
    dir: str = "runs"


class Recipe(_Section):
    data: DataCfg = DataCfg()
    augment: AugmentCfg = AugmentCfg()
    model: ModelCfg = ModelCfg()
    optim: OptimCfg = OptimCfg()
    schedule: ScheduleCfg = ScheduleCfg()
    method: MethodCfg = MethodCfg()
    train: TrainCfg = TrainCfg()
    run: RunCfg = RunCfg()

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.schedule.warmup_epochs >= self.train.epochs:
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must be smaller than "
                f"train.epochs ({self.train.epochs})"
            )
        if self.augment.mix_off_epochs > self.train.epochs:
            raise ValueError("augment.mix_off_epochs must not exceed train.epochs")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --- presets ---------------------------------------------------------------------------------

#: The 2016 ResNet recipe (He et al., §4.2): SGD 0.1, momentum 0.9, wd 1e-4, step decay ÷10 at
#: 50 % and 75 %, crop + flip augmentation, no other trick.
BASELINE: dict[str, Any] = {
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
    "schedule": {"name": "multistep", "gamma": 0.1},
    "model": {"zero_gamma": False},
    "train": {"label_smoothing": 0.0, "precision": "fp32"},
}

#: Every Bag-of-Tricks item on: linear LR scaling, warmup, cosine, zero-γ, no bias decay, Nesterov,
#: label smoothing, mixup with clean final epochs, mixed precision where it pays (auto).
TRICKS: dict[str, Any] = {
    "optim": {"name": "sgd", "lr": 0.2, "lr_scaling": True, "momentum": 0.9, "nesterov": True,
              "weight_decay": 5e-4, "no_bias_decay": True},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "model": {"zero_gamma": True},
    "augment": {"mixup_alpha": 0.2, "mix_off_epochs": 3},
    "train": {"label_smoothing": 0.1, "precision": "auto"},
}

#: Time to accuracy on 28×28 digits: a net that pools before it normalises, 6 epochs of SGD
#: (Nesterov) with a one-cycle LR (1 warmup epoch, then linear decay to 0), label smoothing 0.1
#: and test-time augmentation by translations, evaluated once, at the end. Every value was chosen
#: on a validation split carved out of MNIST-5k's 4,000 training digits, never on its test digits
#: (benchmarks/fast_search.py; docs/results.md, "Time to accuracy").
FAST: dict[str, Any] = {
    "model": {"name": "fastcnn"},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
              "no_bias_decay": True},
    "schedule": {"name": "linear", "warmup_epochs": 1},
    "train": {"epochs": 6, "batch_size": 64, "label_smoothing": 0.1, "tta": True,
              "eval_every": 6, "checkpoint_every": 6, "precision": "auto"},
}

#: The demo and default: `fast`'s recipe on a wider, deeper net (widths 24/48/96, a fourth conv
#: at the last resolution) for 16 epochs, evaluated and checkpointed every epoch so the
#: convergence verdict can judge it. Chosen, like `fast`, on validation folds of the training
#: digits (benchmarks/fast_search.py --study default); it replaced `baseline` (resnet8, 98.20 ±
#: 0.17 % test top-1 in ~100 s).
DEFAULT: dict[str, Any] = {
    **FAST,
    "model": {"name": "fastcnn24-4"},
    "train": {"epochs": 16, "batch_size": 64, "label_smoothing": 0.1, "tta": False,
              "precision": "auto"},
}

PRESETS: dict[str, dict[str, Any]] = {
    "baseline": BASELINE,
    "tricks": TRICKS,
    "fast": FAST,
    "default": DEFAULT,
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {dotted}: '{key}' is a value, not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``a.b=c`` (c read as YAML, so 0.1, true, [1, 2] keep their types)."""
    if "=" not in text:
        raise UserError(f"--set '{text}' is not key=value; write e.g. --set optim.lr=0.05")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"--set '{text}' has no key; write e.g. --set optim.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return list(model.model_fields)


def _explain(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "recipe"
    if first["type"] == "extra_forbidden":
        name = str(loc[-1])
        choices = _fields_at(loc[:-1])
        prefix = ".".join(str(p) for p in loc[:-1])
        hint = closest(name, choices)
        where = f"section '{prefix}'" if prefix else "the recipe"
        return (f"unknown recipe key '{key}'{hint}; {where} takes: {', '.join(choices)}")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and not loc:
        return f"invalid recipe: {msg}"
    bad = first.get("input")
    return f"recipe key '{key}' = {bad!r}: {msg}; fix it in the recipe or with --set {key}=..."


def build_recipe(source: str | dict[str, Any] | None = None,
                 overrides: list[str] | dict[str, Any] | None = None) -> Recipe:
    """Build and validate a recipe.

    ``source`` is a preset name (``baseline``, ``tricks``, ``default``), a YAML file path, a dict,
    or None (the default preset). A YAML file may name ``preset: tricks`` to start from a preset.
    ``overrides`` are ``a.b=c`` strings (as from ``--set``) or a ``{"a.b": c}`` dict.
    """
    tree: dict[str, Any]
    if source is None:
        tree = copy.deepcopy(PRESETS["default"])
    elif isinstance(source, dict):
        tree = copy.deepcopy(source)
    elif source in PRESETS:
        tree = copy.deepcopy(PRESETS[source])
    else:
        path = Path(source)
        if not path.exists():
            raise UserError(f"recipe '{source}' is neither a preset ({', '.join(PRESETS)}) nor an "
                            f"existing YAML file{closest(source, PRESETS)}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            at = f" (line {line + 1})" if line is not None else ""
            raise UserError(f"recipe file {path} is not valid YAML{at}; fix the syntax") from None
        if not isinstance(loaded, dict):
            raise UserError(f"recipe file {path} must be a mapping of sections (data:, model:)")
        tree = loaded
    preset = tree.pop("preset", None) if isinstance(tree, dict) else None
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown preset '{preset}'{closest(str(preset), PRESETS)}; "
                            f"presets: {', '.join(PRESETS)}")
        tree = _merge(PRESETS[preset], tree)
    items = overrides.items() if isinstance(overrides, dict) else (
        parse_override(o) for o in (overrides or []))
    for key, value in items:
        _set(tree, key, value)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise UserError(_explain(err)) from None


def load_saved_recipe(path: Path) -> Recipe:
    """Load the recipe.yaml of a run folder (plain YAML, validated)."""
    if not path.exists():
        raise UserError(f"{path.parent} has no recipe.yaml; is it a lightship run folder?")
    return build_recipe(str(path))
