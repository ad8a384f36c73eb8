import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lightship.errors import UserError
from lightship.methods.supervised import Supervised
from lightship.recipe import build_recipe
from lightship.train.loop import train
from tests.conftest import tiny_recipe


def test_label_smoothing_matches_formula():
    torch.manual_seed(0)
    logits, y, eps = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0]), 0.1
    loss, terms, _ = Supervised(eps).loss(lambda x: x, logits, y)
    logp = torch.log_softmax(logits, 1)
    expected = ((1 - eps) * -logp[torch.arange(6), y] - eps * logp.mean(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    soft = F.one_hot(y, 5).float()
    loss_soft, _, _ = Supervised(eps).loss(lambda x: x, logits, soft)
    assert loss_soft.item() == pytest.approx(expected.item(), rel=1e-6)


def test_run_folder_layout_and_records(tmp_path):
    res = train(tiny_recipe(tmp_path), progress=False, quiet=True)
    run = res.run_dir
    for name in ("recipe.yaml", "metrics.jsonl", "summary.json", "weights.safetensors",
                 "checkpoints/last.json"):
        assert (run / name).exists(), name
    assert not (run / ".lock").exists()
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if r["kind"] == "step"]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert len(steps) == 3 * (96 // 16) and len(evals) == 3
    assert [r["step"] for r in steps] == list(range(1, 19))
    for key in ("loss", "lr", "grad_norm", "ips"):
        assert all(isinstance(r[key], float) for r in steps)
    for key in ("test_top1", "test_top5", "test_loss", "train_loss"):
        assert key in evals[-1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3
    assert summary["test_top1"] == evals[-1]["test_top1"]
    assert build_recipe(str(run / "recipe.yaml")) == tiny_recipe(tmp_path)


def test_same_seed_same_numbers_and_other_seed_differs(tmp_path):
    a = train(tiny_recipe(tmp_path / "a"), progress=False, quiet=True)
    b = train(tiny_recipe(tmp_path / "b"), progress=False, quiet=True)
    c = train(tiny_recipe(tmp_path / "c", "train.seed=1"), progress=False, quiet=True)

    def losses(r):
        return [json.loads(x)["loss"] for x in (r.run_dir / "metrics.jsonl").read_text()
                .splitlines() if json.loads(x)["kind"] == "step"]

    assert losses(a) == losses(b)
    assert losses(a) != losses(c)
    wa = load_file(a.run_dir / "weights.safetensors")
    wb = load_file(b.run_dir / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("extra", [[], ["train.ema=0.9", "augment.cutmix_alpha=1.0",
                                        "augment.cutout=2", "optim.name=adamw", "optim.lr=0.01"]])
def test_resume_gives_identical_final_weights(tmp_path, extra):
    full = train(tiny_recipe(tmp_path / "full", *extra), progress=False, quiet=True)
    part = train(tiny_recipe(tmp_path / "part", *extra), progress=False, quiet=True,
                 stop_after_epochs=2)
    assert part.summary["status"] == "stopped"
    assert not (part.run_dir / "weights.safetensors").exists()
    resumed = train(resume=part.run_dir, progress=False, quiet=True)
    wa = load_file(full.run_dir / "weights.safetensors")
    wb = load_file(resumed.run_dir / "weights.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    def steps(r):
        return [json.loads(x) for x in (r.run_dir / "metrics.jsonl").read_text().splitlines()]

    la = [r["loss"] for r in steps(full) if r["kind"] == "step"]
    lb = [r["loss"] for r in steps(resumed) if r["kind"] == "step"]
    assert la == lb


def test_existing_run_is_never_overwritten_without_flag(tmp_path):
    first = train(tiny_recipe(tmp_path), progress=False, quiet=True)
    before = {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="already exists"):
        train(tiny_recipe(tmp_path), progress=False, quiet=True)
    assert before == {p: p.read_bytes() for p in first.run_dir.rglob("*") if p.is_file()}
    again = train(tiny_recipe(tmp_path), progress=False, quiet=True, overwrite=True)
    assert again.summary["status"] == "finished"


def test_mnist5k_subset_learns_well_above_chance(tmp_path):
    r = build_recipe("baseline", ["data.name=mnist5k", "data.fraction=0.2", "model.name=cnn",
                                  "train.epochs=5", "train.batch_size=32",
                                f"run.dir={tmp_path}", "run.name=m"])
    res = train(r, progress=False, quiet=True)
    assert res.summary["test_top1"] > 60.0  # chance is 10 %


def test_nonfinite_loss_stops_with_clear_message(tmp_path):
    recipe = tiny_recipe(tmp_path, "optim.lr=1e30", "optim.lr_scaling=false",
                         "schedule.warmup_epochs=0", "model.norm=none")
    with pytest.raises(UserError, match="loss became (nan|inf)"):
        train(recipe, progress=False, quiet=True)
    assert not (tmp_path / "runs" / "t" / ".lock").exists()


def test_second_writer_is_refused_by_the_lock(tmp_path):
    from lightship.runs import RunLock, RunPaths

    first = train(tiny_recipe(tmp_path), progress=False, quiet=True, stop_after_epochs=1)
    lock = RunLock(RunPaths(first.run_dir))
    lock.path.write_text("1")  # pid 1 is alive: another process holds the folder
    with pytest.raises(UserError, match="in use by process 1"):
        train(resume=first.run_dir, progress=False, quiet=True)
    lock.path.write_text("999999999")  # a stale lock of a dead process is taken over
    assert train(resume=first.run_dir, progress=False, quiet=True).summary["status"] == "finished"


def test_precision_defaults_follow_the_measurements():
    from lightship.train.precision import choose_precision, cpu_has_native_bf16

    cpu = choose_precision("auto", "auto", torch.device("cpu"))
    assert cpu.channels_last  # measured faster for convnets on the 2-core CPU
    assert cpu.name == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert choose_precision("bf16", False, torch.device("cpu")).dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", "auto", torch.device("cpu"))


def test_grad_clip_bounds_the_update(tmp_path):
    from lightship.build import build_model

    common = ["optim.momentum=0", "optim.weight_decay=0", "optim.lr=0.5", "train.epochs=1",
              "schedule.warmup_epochs=0", "augment.mixup_alpha=0", "augment.mix_off_epochs=0"]
    clipped = train(tiny_recipe(tmp_path / "c", *common, "optim.grad_clip=1e-9"), progress=False,
                    quiet=True)
    free = train(tiny_recipe(tmp_path / "f", *common), progress=False, quiet=True)
    torch.manual_seed(0)
    init = build_model(tiny_recipe(tmp_path), 3, 1, 8).state_dict()
    moved = {k: (clipped.model.state_dict()[k] - init[k]).abs().max().item()
             for k in init if k.endswith("weight")}
    assert max(moved.values()) < 1e-6
    assert max((free.model.state_dict()[k] - init[k]).abs().max().item() for k in moved) > 1e-3
    steps = [json.loads(x) for x in (clipped.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 1e-6 for r in steps if r["kind"] == "step")  # pre-clip norm logged


def test_ema_weights_are_saved_and_evaluated(tmp_path):
    res = train(tiny_recipe(tmp_path, "train.ema=0.5"), progress=False, quiet=True)
    saved = load_file(res.run_dir / "weights.safetensors")
    tag = json.loads((res.run_dir / "checkpoints" / "last.json").read_text())["tag"]
    raw = load_file(res.run_dir / "checkpoints" / f"{tag}.safetensors")
    key = next(k for k in raw if k.endswith("weight"))
    assert not torch.equal(saved[key], raw[key])  # the average, not the last step's weights
    assert torch.equal(saved[key], res.model.state_dict()[key].cpu())


def test_fast_recipe_validates_and_trains_on_tiny_data(tmp_path):
    r = build_recipe("fast", ["data.name=synthetic:n=96,classes=3,size=8,channels=1",
                              "train.epochs=2", "train.batch_size=16", f"run.dir={tmp_path}",
                              "run.name=f"])
    res = train(r, progress=False, quiet=True)
    assert res.summary["status"] == "finished" and res.summary["model"] == r.model.name
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2] and "test_top1" in evals[-1]
    assert "test_top1" not in evals[0]  # evaluated once, at the end (eval_every = epochs)
    assert res.summary["test_top1"] > 100 / 3  # above chance on the learnable patterns
    times = [r["time"] for r in recs]  # wall timestamps on every record, in order
    assert all(isinstance(t, float) for t in times) and times == sorted(times)
    from lightship.evaluate import evaluate_target
    from lightship.runs import read_records

    assert read_records(res.run_dir).terms() == []  # a timestamp is not a loss term
    again = evaluate_target(res.run_dir)  # `lightship eval` of the run evaluates with its TTA
    assert again.test_top1 == evals[-1]["test_top1"]
    assert again.test_loss == pytest.approx(evals[-1]["test_loss"], rel=1e-5)


def test_tta_final_augments_only_the_last_evaluation(tmp_path):
    from lightship.evaluate import evaluate_target

    r = build_recipe("tricks", ["data.name=synthetic:n=96,classes=3,size=8,channels=1",
                                "model.name=cnn4", "train.epochs=3", "train.batch_size=16",
                                "train.tta=final", f"run.dir={tmp_path}", "run.name=t"])
    res = train(r, progress=False, quiet=True)
    evals = [x for x in map(json.loads, (res.run_dir / "metrics.jsonl").read_text().splitlines())
             if x["kind"] == "eval"]
    assert [e.get("tta", False) for e in evals] == [False, False, True]
    again = evaluate_target(res.run_dir)  # `lightship eval` reproduces the final, TTA number
    assert again.test_loss == pytest.approx(evals[-1]["test_loss"], rel=1e-5)
    plain = train(build_recipe(r.to_dict(), ["train.tta=false", "run.name=p"]),
                  progress=False, quiet=True)  # the same training, evaluated without TTA
    plain_evals = [x for x in map(json.loads, (plain.run_dir / "metrics.jsonl").read_text()
                                  .splitlines()) if x["kind"] == "eval"]
    assert [e["test_loss"] for e in plain_evals[:2]] == [e["test_loss"] for e in evals[:2]]
    assert plain_evals[-1]["test_loss"] != evals[-1]["test_loss"]


def test_tta_averages_softmax_over_the_image_and_four_translations():
    from lightship.data.augment import translations
    from lightship.evaluate import evaluate
    from lightship.train.precision import choose_precision

    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 3] = 1.0
    moved = sorted((v[0, 0] == 1).nonzero().tolist()[0] for v in translations(x))
    assert moved == [[1, 3], [2, 2], [2, 4], [3, 3]]  # one pixel up, left, right, down

    class Data:  # one test image of class 0
        def test_batches(self, batch_size, channels_last=False):
            return iter([(x, torch.tensor([0]))])

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 3))
    prec = choose_precision("fp32", False, torch.device("cpu"))
    views = [x, *translations(x)]
    with torch.no_grad():
        p = torch.stack([model(v).softmax(1) for v in views]).mean(0)
    out = evaluate(model, Data(), prec, tta=True)
    assert out["test_loss"] == pytest.approx(-p[0, 0].log().item(), rel=1e-5)
    plain = evaluate(model, Data(), prec)
    with torch.no_grad():
        assert plain["test_loss"] == pytest.approx(
            -model(x).log_softmax(1)[0, 0].item(), rel=1e-5)
