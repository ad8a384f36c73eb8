"""Start from pretrained weights (model.init / --init) and fine-tune (the finetune section);
class subsets and resizing for source/target pairs (data.classes, data.image_size)."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from lightship.build import build_model
from lightship.cli import main
from lightship.data import load_data, load_dataset
from lightship.errors import UserError
from lightship.evaluate import evaluate, evaluate_target
from lightship.finetune import apply_init, init_student, read_init
from lightship.models import create_model
from lightship.recipe import build_recipe
from lightship.runs import read_records
from lightship.train.loop import train
from lightship.train.precision import choose_precision
from lightship.weights import save_weights, weights_metadata
from tests.conftest import tiny_recipe

DATA = "synthetic:n=96,classes=3,size=8,channels=1"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained 3-class cnn4 run to start from."""
    tmp = tmp_path_factory.mktemp("source")
    return train(tiny_recipe(tmp), progress=False, quiet=True)


def _prec():
    return choose_precision("fp32", False, torch.device("cpu"))


def test_init_from_run_folder_reproduces_its_test_top1_at_epoch_0(source, tmp_path):
    recipe = tiny_recipe(tmp_path, f"model.init={source.run_dir}", "train.seed=5")
    data = load_data(recipe.data)
    torch.manual_seed(5)  # another seed: the random init would score differently
    model = build_model(recipe, 3, 1, 8)
    rec = init_student(model, recipe, data.info.classes)
    assert rec["loaded"] == rec["total"] and not rec["reinitialised"]
    assert rec["line"] == f"loaded {rec['total']} of {rec['total']} tensors"
    assert evaluate(model, data, _prec())["test_top1"] == source.test_top1


def test_other_classes_reinitialise_the_head_and_keep_the_backbone(source):
    init = read_init(source.run_dir)
    torch.manual_seed(0)
    model = create_model("cnn4", 2, 1, 8)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = apply_init(model, init, "cnn4")
    assert report.head == "head re-initialised: 3 → 2 classes"
    assert report.line().startswith(f"loaded {report.total - 2} of {report.total} tensors")
    after = model.state_dict()
    for key, value in after.items():
        if key.startswith("fc."):
            assert torch.equal(value, fresh[key])  # the fresh head, not the file's
        else:
            assert torch.equal(value, init.tensors[key])
    # same count but other class names (digits 0–4 → 5–9): the head is re-initialised too
    model3 = create_model("cnn4", 3, 1, 8)
    report = apply_init(model3, init, "cnn4", classes=("a", "b", "c"))
    assert report.head.startswith("head re-initialised: other classes")
    assert apply_init(model3, init, "cnn4", classes=("0", "1", "2")).head == ""


def test_init_from_an_unfinished_run_names_its_checkpoint_instead(source, tmp_path, capsys):
    """Issue 24: --init RUN of a run without weights.safetensors silently loaded its last
    checkpoint. It is refused in one line naming that checkpoint (which loads when given) and
    how to finish the run; nothing is written."""
    import shutil

    run = tmp_path / "unfinished"
    shutil.copytree(source.run_dir, run)
    (run / "weights.safetensors").unlink()
    (run / "summary.json").unlink()
    tag = json.loads((run / "checkpoints" / "last.json").read_text())["tag"]
    ckpt = run / "checkpoints" / f"{tag}.safetensors"
    with pytest.raises(UserError) as err:
        read_init(run)
    msg = str(err.value)
    assert "has not finished" in msg and f"--init {ckpt}" in msg, msg
    assert f"--resume {run}" in msg and "\n" not in msg, msg
    assert read_init(ckpt).file == ckpt
    out = tmp_path / "runs"
    capsys.readouterr()
    assert main(["train", "--data", DATA, "--model", "cnn4", "--epochs", "1", "--device", "cpu",
                 "--init", str(run), "--out", str(out), "--name", "n", "--no-progress"]) == 2
    err_line = capsys.readouterr().err
    assert err_line.count("\n") == 1 and f"--init {ckpt}" in err_line, err_line
    assert not out.exists()


@pytest.mark.parametrize("given,wanted", [(1, 3), (3, 1)])
def test_first_conv_adapts_channels_for_a_grey_image(tmp_path, given, wanted):
    torch.manual_seed(0)
    src = create_model("resnet8", 4, given, 16)
    src.train()
    with torch.no_grad():  # non-trivial BN statistics
        src(torch.randn(32, given, 16, 16))
    src.eval()
    path = tmp_path / "src.safetensors"
    save_weights(path, src)
    dst = create_model("resnet8", 4, wanted, 16)
    report = apply_init(dst, read_init(path), "resnet8")
    assert report.adapted == ["stem.0.weight"] and report.loaded == list(dst.state_dict())
    dst.eval()
    grey = torch.randn(8, 1, 16, 16)
    with torch.no_grad():
        a = src(grey.expand(-1, given, -1, -1))
        b = dst(grey.expand(-1, wanted, -1, -1))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_frozen_prefix_and_frozen_bn_stay_bit_identical(source, tmp_path):
    run = train(tiny_recipe(tmp_path, f"model.init={source.run_dir}", "finetune.freeze=stem",
                            "finetune.freeze_bn=true", "finetune.head_lr_mult=2"),
                progress=False, quiet=True)
    start = load_file(source.run_dir / "weights.safetensors")
    end = load_file(run.run_dir / "weights.safetensors")
    for key, value in end.items():
        fixed = key.startswith("stem.") or any(key.endswith(s) for s in (
            ".running_mean", ".running_var", ".num_batches_tracked", "1.weight", "1.bias"))
        if fixed:  # stem, and every BN's statistics and affine (the .1 of each conv block)
            assert torch.equal(value, start[key]), key
        else:
            assert not torch.equal(value, start[key]), key
    first = read_records(run.run_dir).starts[0]
    assert first["init"]["sha256"] == read_init(source.run_dir).sha256
    assert first["init"]["source"] == str(source.run_dir)


def test_lr_multipliers_compose_with_no_bias_decay(source, tmp_path):
    from lightship.finetune import lr_multipliers
    from lightship.recipe import FinetuneCfg
    from lightship.train.optim import make_optimizer

    model = create_model("cnn4", 3, 1, 8)
    recipe = tiny_recipe(tmp_path, "optim.no_bias_decay=true")
    mult = lr_multipliers(model, FinetuneCfg(backbone_lr_mult=0.1, head_lr_mult=3))
    opt = make_optimizer(model, recipe.optim, 16, mult)
    base = opt.defaults["lr"]
    got = {(g["weight_decay"] > 0, g["lr_mult"]): (g["lr"], len(g["params"]))
           for g in opt.param_groups}
    assert got == {(True, 0.1): (pytest.approx(0.1 * base), 3), (False, 0.1): (
        pytest.approx(0.1 * base), 6), (True, 3): (pytest.approx(3 * base), 1),
        (False, 3): (pytest.approx(3 * base), 1)}


def test_resume_is_exact_with_every_finetune_control(source, tmp_path):
    extra = (f"model.init={source.run_dir}", "finetune.freeze=layer1", "finetune.freeze_bn=true",
             "finetune.backbone_lr_mult=0.5", "finetune.head_lr_mult=2",
             "finetune.reinit_head=true", "optim.no_bias_decay=true")
    full = train(tiny_recipe(tmp_path / "full", *extra), progress=False, quiet=True)
    part = train(tiny_recipe(tmp_path / "part", *extra), progress=False, quiet=True,
                 stop_after_epochs=1)
    resumed = train(resume=part.run_dir, progress=False, quiet=True)
    wa = load_file(full.run_dir / "weights.safetensors")
    wb = load_file(resumed.run_dir / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["loss"] for r in read_records(full.run_dir).steps] == \
        [r["loss"] for r in read_records(resumed.run_dir).steps]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > '{self.marker}'",)


def test_pickled_pth_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": _Evil(marker)}, evil)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil(marker)))
    for path in (evil, raw):
        with pytest.raises(UserError, match="refusing to load .*never as code"):
            read_init(path)
        out = tmp_path / "runs"
        assert main(["train", "--data", DATA, "--model", "cnn4", "--init", str(path),
                     "--out", str(out), "--name", "x", "--epochs", "1"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refusing to load" in err
        assert not out.exists()
    assert not marker.exists()


def test_wrong_architecture_exits_2_with_one_line_and_writes_nothing(source, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--data", DATA, "--model", "resnet8", "--init", str(source.run_dir),
                 "--out", str(out), "--name", "x", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "does not fit resnet8's backbone" in err[0] and "cnn4" in err[0]
    assert not out.exists()


def test_torchvision_resnet18_state_dict_a_user_saved(tmp_path, capsys):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    net = tvm.resnet18()  # random; a user would save a trained one the same way
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    out = tmp_path / "runs"
    assert main(["train", "--data", "synthetic:n=64,classes=3,size=16,channels=1",
                 "--model", "torchvision:resnet18", "--init", str(path), "--epochs", "1",
                 "--batch-size", "32", "--out", str(out), "--name", "tv", "--no-progress",
                 "--set", "finetune.freeze_bn=true", "--set", "finetune.freeze=conv1,layer1"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("init from"))
    n = len(net.state_dict())
    assert (f"loaded {n - 2} of {n} tensors; head re-initialised: 1000 → 3 classes; adapted "
            "input channels of model.conv1.weight") in line
    end, start = load_file(out / "tv" / "weights.safetensors"), net.state_dict()
    assert torch.equal(end["model.layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])
    # frozen by its torchvision name: the file's RGB filters summed for grey input
    assert torch.equal(end["model.conv1.weight"], start["conv1.weight"].sum(1, keepdim=True))
    assert not torch.equal(end["model.layer2.0.conv1.weight"], start["layer2.0.conv1.weight"])


def test_class_subset_and_resize_are_recorded(tmp_path):
    data = load_dataset("digits", classes=[5, 6, 7, 8, 9], image_size=28)
    info = data.info
    assert (info.num_classes, info.classes, info.input_size) == (5, ("5", "6", "7", "8", "9"), 28)
    assert set(data.train_labels.tolist()) == set(data.test_labels.tolist()) == set(range(5))
    full = load_dataset("digits")
    assert info.n_train == int((full.train_labels >= 5).sum())
    recipe = build_recipe("baseline", ["data.name=digits", "data.classes=5-9",
                                       "data.image_size=28"])
    assert recipe.data.classes == [5, 6, 7, 8, 9]
    meta = weights_metadata(recipe, info)
    assert meta["data_options"] == {"classes": [5, 6, 7, 8, 9], "image_size": 28}
    assert meta["classes"] == ["5", "6", "7", "8", "9"]
    with pytest.raises(UserError, match="data.classes names class 12"):
        load_dataset("digits", classes=[1, 12])
    with pytest.raises(UserError, match="data.classes"):
        build_recipe("baseline", ["data.classes=[1, 1]"])
    assert json.loads(json.dumps(recipe.to_dict()))["data"]["classes"] == [5, 6, 7, 8, 9]
    # a weights file is evaluated on the subset and size it was trained on
    path = tmp_path / "w.safetensors"
    save_weights(path, build_model(recipe, 5, 1, 28), meta)
    assert evaluate_target(path).n_test == info.n_test
