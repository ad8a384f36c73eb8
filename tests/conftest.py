import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests are tiny; extra threads only add scheduling noise on the 2-core CI machine.
    torch.set_num_threads(1)
    yield


def tiny_recipe(tmp_path, *extra: str, preset: str = "tricks"):
    """A few-second recipe on synthetic data with a small CNN."""
    from lightship.recipe import build_recipe

    return build_recipe(preset, [
        "data.name=synthetic:n=96,classes=3,size=8,channels=1", "model.name=cnn4",
        "train.epochs=3", "train.batch_size=16", f"run.dir={tmp_path / 'runs'}", "run.name=t",
        "schedule.warmup_epochs=1", "augment.mix_off_epochs=1", *extra])


def write_npz(path, **over):
    """A small .npz dataset (30 train / 9 test 8×8 grey images, 3 classes); ``over`` replaces
    arrays to make it malformed."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (30, 8, 8), dtype=np.uint8),
              "y_train": np.arange(30) % 3,
              "x_test": rng.integers(0, 256, (9, 8, 8), dtype=np.uint8),
              "y_test": np.arange(9) % 3}
    arrays.update(over)
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, request):
    """A trained resnet8 run folder to teach from, made with the test module's ``DATA`` and
    ``SMALL`` (CLI training options); one per test module."""
    from lightship.cli import main

    mod = request.module
    out = tmp_path_factory.mktemp("teacher")
    assert main(["train", "--data", mod.DATA, "--model", "resnet8", *mod.SMALL, "--out", str(out),
                 "--name", "t"]) == 0
    return out / "t"
