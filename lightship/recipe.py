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

from lightship.errors import UserError, closest, shown
from lightship.fileio import user_path
from lightship.methods.terms import TERMS, parse_method


class _Section(BaseModel):
    # extra="forbid": a mistyped key is an error, never silently ignored. No field means
    # anything at inf or NaN (`--lr inf` is a typo), so non-finite numbers are refused.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataCfg(_Section):
    name: str = "mnist5k"
    """Built-in name (`lightship data list`) or a path (CIFAR, MNIST IDX, ImageFolder, .npz)."""
    fraction: float = Field(1.0, gt=0, le=1)
    """Stratified subset of the training split (1.0, 0.1, 0.01: the low-data regimes of He et al.
    2019, "Rethinking ImageNet Pre-training")."""
    max_per_class: int | None = Field(None, ge=1)
    seed: int = 0
    """Seed of the subset draw and of the K-fold split (independent of the training seed)."""
    folds: int | None = Field(None, ge=2)
    """Stratified K-fold over all images of a built-in dataset (mnist5k, digits, synthetic): their
    train and test images are pooled and fold `data.fold` is the test part (never trained on);
    None = the dataset's own split. Refused for datasets with a fixed test split (CIFAR, IDX)."""
    fold: int = Field(0, ge=0)
    """Which of the `data.folds` folds is the test part (0..folds-1)."""
    folds_of: Literal["all", "train"] = "all"
    """What `data.folds` splits: `all` = a built-in's train and test images pooled (the studies);
    `train` = the training split only, of any dataset, so fold `data.fold` is a validation part
    carved from the training images and the test split is never read (`lightship lift`)."""
    classes: list[int] | None = None
    """Keep only these classes (original label indices) and relabel them 0..k−1 in this order:
    `5-9`, `0,2,4` or `[5, 6, 7, 8, 9]` (MNIST-5k digits 0–4 as a pretraining source, 5–9 as a
    fine-tuning target: He et al. 2019, "Rethinking ImageNet Pre-training"). In-memory data only."""
    image_size: int | None = Field(None, ge=4)
    """Resize images to this square side once at load time (torch's bilinear, antialiased
    interpolate), e.g. sklearn digits 8×8 → 28 to fine-tune a net pretrained on MNIST. Default:
    the data's own size (ImageFolder: 64, or smaller images' median shorter side)."""
    workers: int = Field(2, ge=0)
    """ImageFolder only: DataLoader worker processes."""

    @field_validator("classes", mode="before")
    @classmethod
    def _class_list(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if not isinstance(value, str):
            return value
        out: list[int] = []
        for part in (p.strip() for p in value.split(",") if p.strip()):
            lo, dash, hi = part.partition("-")
            if not (lo.strip().isdigit() and (not dash or hi.strip().isdigit())):
                raise ValueError("give class indices like 5-9, 0,2,4 or [5, 6, 7]")
            out += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
        return out

    @field_validator("classes")
    @classmethod
    def _distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(set(value)) != len(value) or not value
                                  or min(value) < 0):
            raise ValueError("class indices must be distinct, >= 0, and at least one")
        return value


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
    init: str | None = None
    """Initial weights (`--init`): a run folder, a lightship .safetensors, or a plain state_dict
    (.safetensors, or .pt/.pth read as tensors only, never unpickled) such as a torchvision or
    timm checkpoint saved by the user. Tensors match by name and shape; a head of another class
    count is re-initialised; a first conv is adapted 1 ↔ 3 channels (timm's adapt_input_conv).
    None = random init."""
    norm: Literal["bn", "gn", "syncbn", "none"] = "bn"
    gn_groups: int = Field(8, ge=1)
    zero_gamma: bool = False
    """γ=0 for the last norm of every residual block (Goyal et al. 2017; Bag of Tricks §3.1)."""
    shortcut: Literal["A", "B", "C"] = "A"
    """CIFAR ResNet shortcut (He et al. 2016, Table 3): A = identity + zero padding, B = 1×1
    projection where the shape changes, C = 1×1 projection on every shortcut."""
    variant: Literal["v1", "B", "C", "D"] = "v1"
    """ImageNet ResNet variant (Bag of Tricks §4.1)."""
    plain: bool = False
    """The same net without shortcuts (the degradation experiment)."""
    width: float = Field(1.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)

    def architecture(self) -> dict[str, Any]:
        """The options that define the net (``create_model(name, ..., **rest)``): all but
        ``init``, which says where training started."""
        return self.model_dump(mode="json", exclude={"init"})


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
    warmup_share: float | None = Field(None, ge=0, le=1)
    """Warmup as a share of train.epochs (the `tricks` preset: 5/120, the paper's 5 of its 120
    epochs); when set, warmup_epochs is share × train.epochs, written into warmup_epochs when
    the recipe is validated (a saved recipe holds both and re-runs the same). A warmup_epochs
    given explicitly wins (the share is then dropped). None = use warmup_epochs as given."""
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


class MethodCfg(_Section):
    name: str = "supervised"
    """`supervised`, or terms joined by '+' (the table in lightship.methods.terms: kd, hint, at,
    dkd, rocket, dml, adversarial)."""
    alpha: float = Field(0.9, ge=0, le=1)
    """`kd`: loss = (1 − α)·CE + α·KD (α on KD; RepDistiller's defaults -r 0.1 -a 0.9), KD =
    T²·KL batch mean. With `rocket` the light net's CE keeps weight 1 and α·KD is added (the
    Rocket+KD of Zhou et al.). For the Rocket authors' α set `kd_scale: rocket`."""
    kd_scale: Literal["batch", "rocket"] = "batch"
    """`kd`: the scale α applies to. batch = α on the batch-mean T²·KL (Hinton's, RepDistiller's);
    rocket = the Rocket Launching authors' scale: their KL is averaged over batch × classes
    and doubled, so α weighs the batch-mean KD as 2·α/K for K classes
    (`lightship.methods.kd.rocket_kd_weight`: α 0.9 → 0.18 on 10 classes, 0.018 on 100); CE
    keeps 1 − α (their KD column) or 1 with `rocket` (their Rocket+KD)."""
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
    share: Literal["interval", "bottom", "stem+stage1", "none"] = "interval"
    """`rocket` layer sharing, the authors' rule (stem ↔ stem, light block j of stage s ↔ booster
    block j of stage s; norms and head stay the light net's own): interval = a light net with
    the booster's stages and fewer blocks (wrn-16-1 with wrn-40-1); bottom = a light net that is
    the booster's first stages (wrn-40-1-s2 with wrn-40-1); stem+stage1 = only the stem and the
    light net's first stage (lightship's own); none = nothing tied (the no-sharing ablation)."""
    share_bn: bool = False
    """`rocket`: share the norm layers of shared blocks too (default: conv weights only)."""
    gradient_block: bool = True
    """`rocket`: the hint does not update the booster's own parameters (booster logits detached);
    False = `none`, the hint pulls both nets."""
    rocket_lambda: float = Field(0.03, ge=0)
    """`rocket`: λ of the logit hint λ·‖z_light − z_booster‖² (sum over classes, batch mean):
    0.03, the authors' γ in every Rocket command, with the same reduction. Measured earlier on
    MNIST-5k (resnet8×0.25 with a resnet20×0.25 booster, SGD lr 0.1, the old layouts): λ=1
    diverged in epoch 2, λ=0.1 cost 6 points of test top-1, 0.01 trained stably."""
    adv_pairs: list[tuple[str, str]] | None = None
    """`adversarial`: (student module, teacher module) feature pairs, one critic each; None =
    every stage the two nets name alike (one critic per feature scale, as GAN-KD has one per
    SSD feature map). The student's term is the mean over the critics, so `adv_weight` keeps
    the scale of one critic."""
    adv_loss: Literal["wgan", "hinge", "bce"] = "wgan"
    """`adversarial`: Wasserstein with weight clipping (Arjovsky et al. 2017), hinge, or BCE."""
    adv_weight: float = Field(0.1, ge=0)
    """`adversarial`: weight of the student's adversarial term. lightship's own choice: the
    GAN-KD log (below) gives no weight for it (its Namespace has none)."""
    adv_lr: float = Field(5e-4, gt=0)
    """`adversarial`: the discriminators' own LR (RMSprop for wgan, Adam with β1 0.5
    otherwise). 5e-4: lrD = lrG = 0.0005 in the Namespace of the GAN-KD training log
    (p517332051/GAN-Knowledge-Distillation-SSD, ``ssd_512_mobilenet1_0_resnet50_v1_voc_g_d_new
    _train.log``, beta1 0.5 there too); 1e-4 before issue 22."""
    adv_clip: float = Field(0.03, gt=0)
    """`adversarial` wgan: discriminator weights clipped to [−c, c] after every update. 0.03:
    the GAN-KD log's clamp_lower/clamp_upper ±0.03 (0.01, the WGAN paper's, before issue 22)."""
    adv_cos: float = Field(1.0, ge=0)
    """`adversarial`: weight of the cosine term 1 − cos(student, teacher) (per position, over
    channels, after the adapter); 0 = off. The GAN-KD log reports a
    `cosine_length_loss_metric` at every line (0.64 falling to 0.40) beside the
    generator's losses: we take it as a term on the student's adapted features pulling their
    direction towards the teacher's, at weight 1 as the log names no weight (off before
    issue 22)."""
    teacher: TeacherCfg = TeacherCfg()

    @field_validator("name")
    @classmethod
    def _known_terms(cls, name: str) -> str:
        parse_method(name)
        return name

    @model_validator(mode="after")
    def _term_checks(self) -> MethodCfg:
        for term in self.terms:
            problem = TERMS[term].check(self)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def terms(self) -> list[str]:
        return parse_method(self.name)

    @property
    def needs_teacher(self) -> bool:
        return any(TERMS[term].needs_teacher for term in self.terms)


class TrainCfg(_Section):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """ε of label smoothing (Szegedy et al. 2016; Bag of Tricks §5.2 uses 0.1)."""
    ema: float | None = Field(None, gt=0, lt=1)
    """Decay of an exponential moving average of the weights; evaluation uses the average."""
    tta: bool | Literal["final"] = False
    """Test-time augmentation: an evaluation predicts with the mean softmax over the image and
    its four 1-pixel translations (no flips: they change digits). ``true``: every evaluation;
    ``final``: only the last epoch's (the run's result, and its eval record says ``"tta":
    true``), so per-epoch evaluations stay cheap. Costs 5 forward passes per test image;
    `lightship eval` of the run folder uses it too (as the run's final evaluation did)."""
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

    def tta_at(self, epoch: int) -> bool:
        """Whether the evaluation after ``epoch`` uses test-time augmentation."""
        return self.tta is True or (self.tta == "final" and epoch >= self.epochs)


class FinetuneCfg(_Section):
    """Fine-tuning controls, mostly for a start from ``model.init`` (He, Girshick & Dollár 2019,
    "Rethinking ImageNet Pre-training", fine-tune with frozen BN as detection does)."""

    freeze_bn: bool = False
    """Every BatchNorm keeps its running statistics (eval mode) and affine parameters fixed."""
    freeze: list[str] = []
    """Module prefixes kept fixed, parameters and norm statistics (e.g. `stem,layer1`; a wrapped
    timm/torchvision net also takes its own names, e.g. `conv1,layer1`)."""
    backbone_lr_mult: float = Field(1.0, ge=0)
    """LR multiplier of every student parameter outside the classifier head."""
    head_lr_mult: float = Field(1.0, ge=0)
    """LR multiplier of the classifier head (the last Linear layer)."""
    reinit_head: bool = False
    """Do not load the head from ``model.init`` even when its class count fits."""

    @field_validator("freeze", mode="before")
    @classmethod
    def _prefix_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value


class RunCfg(_Section):
    name: str | None = None
    """Run folder name under dir; None = <model>_<data>_<timestamp>."""
    dir: str = "runs"

    @field_validator("name")
    @classmethod
    def _one_folder(cls, value: str | None) -> str | None:
        # `../x`, `a/b` or an absolute path would put the run folder outside run.dir.
        if value is not None and (any(sep in value for sep in "/\\\0")
                                  or value in (".", "..")):
            raise ValueError("a run name is one folder name (no '/' or '\\', not '.' or '..'); "
                             "choose the parent folder with --out (run.dir)")
        return value


class Recipe(_Section):
    data: DataCfg = DataCfg()
    augment: AugmentCfg = AugmentCfg()
    model: ModelCfg = ModelCfg()
    optim: OptimCfg = OptimCfg()
    schedule: ScheduleCfg = ScheduleCfg()
    method: MethodCfg = MethodCfg()
    train: TrainCfg = TrainCfg()
    finetune: FinetuneCfg = FinetuneCfg()
    run: RunCfg = RunCfg()

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        self._resolve_warmup()
        # Equal is allowed: `--epochs 1` of a preset with one warmup epoch (`fast`, `default`)
        # is a run that is all warmup (the schedule keeps one step after it), not an error.
        if self.schedule.warmup_epochs > self.train.epochs:
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must not exceed "
                f"train.epochs ({self.train.epochs})"
            )
        if self.augment.mix_off_epochs > self.train.epochs:
            raise ValueError("augment.mix_off_epochs must not exceed train.epochs")
        d = self.data
        if d.folds is None and d.fold:
            raise ValueError("data.fold needs data.folds (the number of folds), e.g. data.folds=5")
        if d.folds is not None and d.fold >= d.folds:
            raise ValueError(f"data.fold ({d.fold}) must be below data.folds ({d.folds})")
        return self

    def _resolve_warmup(self) -> None:
        """warmup_share × train.epochs → warmup_epochs. A warmup_epochs given beside a share
        (``--set schedule.warmup_epochs=1`` on `tricks`) wins, and the share is dropped so the
        saved recipe says what ran."""
        sched, share = self.schedule, self.schedule.warmup_share
        if share is None:
            return
        derived = round(share * self.train.epochs, 6)
        if "warmup_epochs" in sched.model_fields_set and \
                abs(sched.warmup_epochs - derived) > 1e-3:
            sched.warmup_share = None
        else:
            sched.warmup_epochs = derived

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

#: Every Bag-of-Tricks item on, with the paper's values (He et al. 2019, §2.1, §3, §5): Nesterov
#: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 × batch / 256 (linear scaling), linear warmup,
#: cosine decay, zero-γ, no bias decay, label smoothing ε = 0.1, mixup α = 0.2, mixed precision
#: where it pays (auto). The paper warms up for 5 of its 120 epochs; the preset keeps that share
#: of whatever train.epochs is (schedule.warmup_share 5/120: 0.83 of its 20 epochs, 5 of 120).
#: The paper trains mixup 200 instead of 120 epochs; the preset does not lengthen training.
TRICKS: dict[str, Any] = {
    "optim": {"name": "sgd", "lr": 0.1, "lr_scaling": True, "reference_batch": 256,
              "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "no_bias_decay": True},
    "schedule": {"name": "cosine", "warmup_share": 5 / 120},
    "model": {"zero_gamma": True},
    "augment": {"mixup_alpha": 0.2},
    "train": {"label_smoothing": 0.1, "precision": "auto"},
}

#: Time to accuracy on 28×28 digits: a net that pools before it normalises (widths 16/32/64, a
#: fourth conv at the last resolution), 6 epochs of SGD (Nesterov) with a one-cycle LR (1 warmup
#: epoch, then linear decay to 0), label smoothing 0.1 and test-time augmentation by
#: translations, evaluated once, at the end. Every value was chosen on a validation split carved
#: out of MNIST-5k's 4,000 training digits, never on its test digits (benchmarks/fast_search.py;
#: docs/results.md, "Time to accuracy").
FAST: dict[str, Any] = {
    "model": {"name": "fastcnn16-4"},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
              "no_bias_decay": True},
    "schedule": {"name": "linear", "warmup_epochs": 1},
    "train": {"epochs": 6, "batch_size": 64, "label_smoothing": 0.1, "tta": True,
              "eval_every": 6, "checkpoint_every": 6, "precision": "auto"},
}

#: The demo and default: `fast`'s recipe on a wider, deeper net (widths 24/48/96, a fourth conv
#: at the last resolution) for 16 epochs with random rotations (±10°), evaluated and
#: checkpointed every epoch so the convergence verdict can judge it; test-time augmentation
#: only at the last evaluation (per-epoch TTA would add ≈ 1 s an epoch). Chosen, like `fast`,
#: on validation folds of the training digits (benchmarks/fast_search.py --study default;
#: rotation + TTA: +0.33 [+0.04, +0.61] points); it replaced `baseline` (resnet8, 98.20 ±
#: 0.17 % test top-1 in ~100 s).
DEFAULT: dict[str, Any] = {
    **FAST,
    "model": {"name": "fastcnn24-4"},
    "augment": {"rotate": 10},
    "train": {"epochs": 16, "batch_size": 64, "label_smoothing": 0.1, "tta": "final",
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


MAX_VALUES = 10_000
"""The most values a recipe file or a ``--set`` value may hold once its YAML aliases (``*name``)
are expanded. A recipe holds a few hundred; a few hundred bytes of nested aliases ("billion
laughs") stand for billions, which validation and its error message would expand."""


def _bounded(value: Any, where: str) -> Any:
    """``value``, unless it holds more than :data:`MAX_VALUES` values with its aliases
    expanded (counted up to the bound, so a bomb is refused at once; a cycle too)."""
    todo, seen = [value], 0
    while todo:
        node = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise UserError(f"{where} holds more than {MAX_VALUES:,} values once its YAML "
                            "aliases (*name) are expanded; a recipe is plain values: write them "
                            "out without nested aliases")
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return value


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
    return key, _bounded(value, f"--set {key}")


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return list(model.model_fields)


def _field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The leading part of an error location that names recipe keys."""
    model: type[BaseModel] | None = Recipe
    path: list[Any] = []
    for part in loc:
        if model is None or str(part) not in model.model_fields:
            break
        path.append(part)
        ann = model.model_fields[str(part)].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return tuple(path)


def _explain(err: ValidationError) -> str:
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "recipe"
    path = _field_path(loc)
    members = [e for e in errors if _field_path(tuple(e["loc"])) == path]
    if path != loc and len(members) > 1 and first["type"] != "extra_forbidden":
        # A union type (tta: true/false/"final"): pydantic reports one error per member,
        # located at key.<member>; say it once, at the key, naming every accepted form.
        key = ".".join(str(p) for p in path)
        forms = dict.fromkeys(e["msg"].removeprefix("Input should be ").split(", unable")[0]
                              for e in members)
        return (f"recipe key '{key}' = {shown(first.get('input'))}: should be "
                f"{' or '.join(forms)}; fix it in the recipe or with --set {key}=...")
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
    return (f"recipe key '{key}' = {shown(bad)}: {msg}; fix it in the recipe or with --set "
            f"{key}=...")


def build_recipe(source: str | dict[str, Any] | None = None,
                 overrides: list[str | tuple[str, Any]] | dict[str, Any] | None = None
                 ) -> Recipe:
    """Build and validate a recipe.

    ``source`` is a preset name (``baseline``, ``tricks``, ``default``), a YAML file path, a dict,
    or None (the default preset). A YAML file or dict starts from the preset it names with
    ``preset: tricks``, else from ``default``: no recipe, an empty file and ``default`` are the
    same recipe. ``overrides`` are applied in order: ``a.b=c`` strings (as from ``--set``; c is
    read as YAML) or ``(key, value)`` pairs taken as they are (CLI shortcuts such as ``--name``,
    whose values are strings however they look), or a ``{"a.b": c}`` dict.
    """
    tree: dict[str, Any]
    if source is None:
        source = "default"
    if isinstance(source, dict):
        tree = copy.deepcopy(source)
    elif source in PRESETS:
        tree = {"preset": source}
    else:
        path = user_path(source)
        if not path.exists():
            raise UserError(f"recipe '{source}' is neither a preset ({', '.join(PRESETS)}) nor an "
                            f"existing YAML file{closest(source, PRESETS)}")
        tree = _read_yaml(path)
    preset = tree.pop("preset", None)
    preset = "default" if preset is None else preset
    if not isinstance(preset, str) or preset not in PRESETS:
        hint = closest(preset, PRESETS) if isinstance(preset, str) else ""
        raise UserError(f"unknown preset {shown(preset)}{hint}; presets: {', '.join(PRESETS)}")
    tree = _merge(PRESETS[preset], tree)
    items = overrides.items() if isinstance(overrides, dict) else (
        o if isinstance(o, tuple) else parse_override(o) for o in (overrides or []))
    for key, value in items:
        _set(tree, key, value)
    return _validate(tree)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise UserError(f"recipe file {path} is not valid YAML{at}; fix the syntax") from None
    if not isinstance(loaded, dict):
        raise UserError(f"recipe file {path} must be a mapping of sections (data:, model:)")
    return _bounded(loaded, f"recipe file {path}")


def _validate(tree: dict[str, Any]) -> Recipe:
    try:
        return Recipe.model_validate(tree)
    except ValidationError as err:
        raise UserError(_explain(err)) from None


def load_saved_recipe(path: Path) -> Recipe:
    """Load the recipe.yaml of a run folder (plain YAML, validated).

    A run saves its whole recipe, so a key it lacks was added to lightship after the run: it
    takes the schema's default (the feature was off then), not the `default` preset's value
    (which may switch it on: `default` rotates its digits and uses TTA; an old run did not).
    """
    if not path.exists():
        raise UserError(f"{path.parent} has no recipe.yaml; is it a lightship run folder?")
    tree = _read_yaml(path)
    tree.pop("preset", None)
    return _validate(tree)


def recipe_differs(run_dir: Path, recipe: Recipe) -> str | None:
    """The first recipe key where the run folder's saved recipe differs from ``recipe`` (the
    run.* keys aside), or None.

    The saved recipe is read through today's schema, so a key added to lightship since the
    run was trained counts as its default (what the cell ran with), not as a difference."""
    try:
        saved = load_saved_recipe(run_dir / "recipe.yaml").to_dict()
    except UserError as exc:  # a key lightship no longer has, a value it no longer accepts
        return f"(its recipe.yaml no longer loads: {exc})"
    planned = recipe.to_dict()

    def walk(a: Any, b: Any, prefix: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                found = walk(a.get(key), b.get(key), f"{prefix}{key}.")
                if found:
                    return found
            return None
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            a, b = list(a), list(b)
        return None if a == b else f"{prefix[:-1]} ({a!r} there, {b!r} now)"

    saved.pop("run", None)
    planned.pop("run", None)
    return walk(saved, planned, "")
