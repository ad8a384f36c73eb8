"""Knowledge transfer through the one loop: teacher plumbing, every term end-to-end from the CLI,
and the teacher's bad-input paths."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lightship.cli import main
from lightship.errors import UserError
from lightship.recipe import build_recipe
from lightship.train.loop import train

DATA = "synthetic:n=96,classes=3,size=8,channels=1"
SMALL = ["--recipe", "baseline", "--epochs", "2", "--batch-size", "16", "--no-progress"]


@pytest.mark.parametrize("method", ["kd", "hint", "at", "dkd", "kd+at"])
def test_distill_each_method_from_the_cli(method, teacher_run, tmp_path, capsys):
    before = load_file(teacher_run / "weights.safetensors")
    out = tmp_path / "runs"
    assert main(["distill", "--teacher", str(teacher_run), "--method", method, "--data", DATA,
                 "--model", "resnet8", *SMALL, "--out", str(out), "--name", "s"]) == 0
    assert "test top-1" in capsys.readouterr().out
    recs = [json.loads(x) for x in (out / "s" / "metrics.jsonl").read_text().splitlines()]
    start = recs[0]
    assert start["method"] == method and 0 <= start["teacher_test_top1"] <= 100
    step = next(r for r in recs if r["kind"] == "step")
    for term in ["ce", *method.split("+")]:
        assert term in step and step[term] == step[term]  # logged, finite
    last_eval = [r for r in recs if r["kind"] == "eval"][-1]
    ces = [r["ce"] for r in recs if r["kind"] == "step" and r["epoch"] == last_eval["epoch"]]
    assert last_eval["train_ce"] == pytest.approx(sum(ces) / len(ces))  # the CE part, apart
    after = load_file(teacher_run / "weights.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_teacher_is_frozen_and_gets_no_gradient(teacher_run, tmp_path):
    from lightship.data import load_dataset
    from lightship.methods.objective import TermObjective as Distill
    from lightship.methods.teacher import load_teacher
    from lightship.models import create_model

    recipe = build_recipe("baseline", [f"data.name={DATA}", "method.name=kd+at",
                                       f"method.teacher.run={teacher_run}"])
    teacher = load_teacher(recipe.method, 3, 1, 8)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    student = create_model("resnet8", 3, 1, 8)
    obj = Distill(recipe.method, student, teacher)
    x, y = next(load_dataset(DATA).test_batches(8))
    loss, terms, _ = obj.loss(student, x, y)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert set(terms) == {"ce", "kd", "at"}


def test_kd_loss_weights_alpha_on_kd(teacher_run):
    from lightship.data import load_dataset
    from lightship.methods.kd import kd_loss
    from lightship.methods.objective import TermObjective as Distill
    from lightship.methods.teacher import load_teacher
    from lightship.models import create_model

    recipe = build_recipe("baseline", [f"data.name={DATA}", "method.name=kd", "method.alpha=0.7",
                                       f"method.teacher.run={teacher_run}"])
    teacher = load_teacher(recipe.method, 3, 1, 8)
    student = create_model("cnn4", 3, 1, 8).eval()
    x, y = next(load_dataset(DATA).test_batches(8))
    loss, terms, s = Distill(recipe.method, student, teacher).loss(student, x, y)
    expected = 0.3 * torch.nn.functional.cross_entropy(s, y) + 0.7 * kd_loss(s, teacher(x), 4.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_bad_input(teacher_run, tmp_path):
    base = [f"data.name={DATA}", f"run.dir={tmp_path}", "train.epochs=1"]
    with pytest.raises(UserError, match="needs exactly one teacher"):
        train(build_recipe("baseline", [*base, "method.name=kd"]), quiet=True)
    wrong_classes = "synthetic:n=96,classes=4,size=8,channels=1"
    with pytest.raises(UserError, match="teacher predicts 3 classes"):
        train(build_recipe("baseline", [*base, f"data.name={wrong_classes}", "method.name=kd",
                                        f"method.teacher.run={teacher_run}"]), quiet=True)
    wrong_shape = "synthetic:n=96,classes=3,size=12,channels=1"
    with pytest.raises(UserError, match="teacher expects"):
        train(build_recipe("baseline", [*base, f"data.name={wrong_shape}", "method.name=kd",
                                        f"method.teacher.run={teacher_run}"]), quiet=True)
    with pytest.raises(UserError, match="did you mean 'kd'"):
        build_recipe("baseline", ["method.name=kdd"])
    assert not any(tmp_path.iterdir())  # nothing written for bad input


def test_cached_teacher_logits_run_the_teacher_once_per_image(teacher_run):
    from lightship.data import Augment, load_dataset
    from lightship.methods.objective import TermObjective as Distill
    from lightship.methods.teacher import load_teacher
    from lightship.models import create_model

    recipe = build_recipe("baseline", [f"data.name={DATA}", "method.name=kd",
                                       f"method.teacher.run={teacher_run}",
                                       "method.teacher.cache=true"])
    teacher = load_teacher(recipe.method, 3, 1, 8)
    student = create_model("resnet8", 3, 1, 8)
    obj = Distill(recipe.method, student, teacher)
    data, off = load_dataset(DATA), Augment(crop_padding=0, hflip=False, cutout=0)
    seen = 0
    for epoch in range(3):
        for x, y in data.train_batches(16, epoch, 0, off):
            obj.loss(student, x, y)
            seen += (epoch == 0) * x.shape[0]
            with torch.inference_mode():
                fresh = teacher(x)
            assert torch.allclose(obj._teacher_logits(x), fresh, atol=1e-5)
    assert obj.teacher_images == seen  # epochs 2 and 3 came from the cache


def test_cached_teacher_logits_only_without_augmentation(teacher_run, tmp_path, capsys):
    base = ["distill", "--teacher", str(teacher_run), "--data", DATA, "--model", "resnet8", *SMALL,
            "--out", str(tmp_path), "--name", "c", "--set", "method.teacher.cache=true"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "augmentation off" in err and "crop" in err and err.count("\n") == 1
    assert main([*base, "--method", "at", "--set", "augment.crop_padding=0"]) == 2
    assert "logits only" in capsys.readouterr().err
    assert main([*base, "--set", "augment.crop_padding=0"]) == 0
    assert "Beyer et al. 2022" in capsys.readouterr().err


def test_teacher_from_a_plain_state_dict_and_a_model_name(teacher_run, tmp_path, capsys):
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"  # a state_dict without lightship metadata
    save_file(load_file(teacher_run / "weights.safetensors"), str(plain))
    base = ["distill", "--teacher", str(plain), "--data", DATA, "--model", "resnet8", *SMALL,
            "--out", str(tmp_path / "runs")]
    assert main([*base, "--name", "a"]) == 2
    assert "--teacher-model" in capsys.readouterr().err
    assert main([*base, "--name", "b", "--teacher-model", "resnet14"]) == 2  # wrong architecture
    assert "another architecture" in capsys.readouterr().err
    assert main([*base, "--name", "c", "--teacher-model", "resnet8"]) == 0
    recs = [json.loads(x) for x in (tmp_path / "runs" / "c" / "metrics.jsonl").read_text()
            .splitlines()]
    ran = json.loads((teacher_run / "summary.json").read_text())["test_top1"]
    assert recs[0]["teacher_test_top1"] == pytest.approx(ran)  # the same teacher, measured again
