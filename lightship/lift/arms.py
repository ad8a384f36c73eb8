"""The arms of a lift: the light net alone, the teacher, and the candidates that might lift the
light net, each with the step cost measured on this machine.

Candidates, in the order the budget admits them (cheapest likely gain first): the light net
trained twice as long (its ×2-schedule twin, which is also the convergence test), the `tricks`
recipe, and every transfer method that applies to the pair at its authors' setting
(:mod:`lightship.methods.authors`): kd, dkd, hint, kd+hint, at, rocket+kd (with a booster),
dml, adversarial. A method *applies* when its objective builds for the light net and the
teacher and one step runs: that same step, timed, is the candidate's cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from lightship.diagnose.twin import twin_recipe
from lightship.errors import UserError
from lightship.methods.authors import NEEDS_TEACHER, authors_settings, combined_settings
from lightship.recipe import Recipe, build_recipe

ORDER = ("longer", "tricks", "kd", "dkd", "hint", "kd-hint", "at", "rocket-kd", "dml",
         "adversarial")
"""Every candidate name, in the order the budget admits them."""

BOOSTERS = {"resnet8": "resnet20", "resnet14": "resnet32", "resnet20": "resnet56",
            "resnet32": "resnet56", "wrn-16-1": "wrn-40-1", "wrn-16-2": "wrn-40-2"}
"""A booster of the light net's family when --booster is not given (Zhou et al. pair a net
with a deeper one of its family: resnet20 → resnet56, wrn-16-1 → wrn-40-1)."""


@dataclass
class LiftArm:
    """One recipe of the lift (fold and run folder are set per cell)."""

    name: str
    label: str
    kind: str
    """light, teacher, candidate."""
    recipe: Recipe
    needs_teacher: bool = False
    step_s: float = 0.0
    """Seconds per training step measured by :func:`measure_steps` (0: not measured)."""
    why_not: str | None = None
    """Why a candidate does not apply to this pair (it is then never trained)."""


def _tree_with(recipe: Recipe, over: dict[str, Any]) -> Recipe:
    return build_recipe(recipe.to_dict(), over)


def teacher_recipe(light: Recipe, heavy: str) -> Recipe:
    """The teacher trained by the lift (``--teacher-model``): the user's recipe with the heavy
    net in place of the light one (its own width and options: defaults)."""
    tree = light.to_dict()
    tree["model"] = {"name": heavy, "norm": light.model.norm}
    return build_recipe(tree)


def tricks_recipe(light: Recipe) -> Recipe:
    """The `tricks` preset on the light net, its data and its schedule length and batch."""
    over: dict[str, Any] = {f"model.{k}": v for k, v in light.model.architecture().items()}
    over.update({f"data.{k}": v for k, v in light.data.model_dump().items()})
    over.update({"train.epochs": light.train.epochs, "train.batch_size": light.train.batch_size,
                 "train.device": light.train.device, "train.seed": light.train.seed})
    return build_recipe("tricks", over)


def candidate_arms(light: Recipe, teacher: dict[str, Any] | None, booster: str | None
                   ) -> list[LiftArm]:
    """Every candidate (in :data:`ORDER`) for ``light``. ``teacher``: the method.teacher keys
    every transfer arm gets (``{"method.teacher.run": PATH}``; the lift sets the per-fold path
    of a trained teacher later), None without a teacher (transfer does not apply)."""
    e = light.train.epochs
    found: dict[str, LiftArm] = {
        "longer": LiftArm("longer", f"light ×2 schedule ({2 * e} epochs)", "candidate",
                          twin_recipe(light, 2)),
        "tricks": LiftArm("tricks", "tricks recipe (Bag of Tricks)", "candidate",
                          tricks_recipe(light)),
    }
    booster = booster or BOOSTERS.get(light.model.name)
    for name, label, over in [*authors_settings(e, booster), *combined_settings()]:
        if name not in NEEDS_TEACHER:  # dml: a peer, no teacher
            found[name] = LiftArm(name, label, "candidate", _tree_with(light, over))
            continue
        if teacher is None:
            found[name] = LiftArm(name, label, "candidate", light, True,
                                  why_not="no teacher (give --teacher or --teacher-model)")
            continue
        try:
            recipe = _tree_with(light, {**over, **teacher})
        except UserError as exc:
            found[name] = LiftArm(name, label, "candidate", light, True, why_not=str(exc))
            continue
        found[name] = LiftArm(name, label, "candidate", recipe, True)
    if "rocket-kd" not in found:
        found["rocket-kd"] = LiftArm("rocket-kd", "rocket+kd", "candidate", light, True,
                                     why_not=f"no booster of {light.model.name}'s family known "
                                             "(give --booster NAME)")
    return [found[n] for n in ORDER]


def measure_steps(arms: list[LiftArm], info: Any, teacher_net: torch.nn.Module | None,
                  threads: int, steps: int = 8) -> None:
    """Time one training step (forward, loss, backward) of every arm on random inputs of the
    data's shape, with ``threads`` torch threads (a worker's share); a candidate whose
    objective does not build or step does not apply (``why_not``). Sets ``step_s``."""
    from lightship.build import build_model, partner_builder
    from lightship.methods.objective import TermObjective
    from lightship.methods.supervised import Supervised
    from lightship.train.precision import choose_device, choose_precision

    same: dict[str, float] = {}  # arms whose step is the same computation (the ×2 twin)
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        for arm in arms:
            if arm.why_not is not None:
                continue
            r = arm.recipe
            what = repr((r.model.architecture(), r.method.model_dump(exclude={"dkd_warmup"}),
                         r.train.batch_size, r.train.precision,
                         r.augment.model_dump(exclude={"mix_off_epochs"})))
            if what in same:
                arm.step_s = same[what]
                continue
            prec = choose_precision(r.train.precision, r.train.channels_last,
                                    choose_device(r.train.device))
            try:
                model = build_model(r, info.num_classes, info.in_chans, info.input_size)
                model = model.to(prec.device, memory_format=prec.memory_format).train()
                if r.method.name == "supervised":
                    objective: Any = Supervised(label_smoothing=r.train.label_smoothing)
                else:
                    t = teacher_net if r.method.needs_teacher else None
                    if t is not None:
                        t = t.to(prec.device, memory_format=prec.memory_format).eval()
                    objective = TermObjective(r.method, model, t, r.train.label_smoothing,
                                              (info.in_chans, info.input_size), r.model.name,
                                              partner_builder(r, info, prec))
                b = min(r.train.batch_size, 256)
                x = torch.randn(b, info.in_chans, info.input_size, info.input_size,
                                device=prec.device).contiguous(memory_format=prec.memory_format)
                y = torch.randint(0, info.num_classes, (b,), device=prec.device)
                spent: list[float] = []
                begin = time.perf_counter()
                for i in range(steps + 2):
                    t0 = time.perf_counter()
                    with prec.autocast():
                        loss = objective.loss(model, x, y)[0]
                    loss.backward()
                    if i >= 2:  # the first steps pay one-off costs
                        spent.append(time.perf_counter() - t0)
                    if len(spent) >= 3 and time.perf_counter() - begin > 2.0:
                        break
                arm.step_s = sorted(spent)[len(spent) // 2] * r.train.batch_size / b
                same[what] = arm.step_s
            except (UserError, ValueError, RuntimeError) as exc:
                if arm.kind != "candidate":
                    raise
                arm.why_not = f"does not apply to this pair: {str(exc).splitlines()[0]}"
    finally:
        torch.set_num_threads(before)
