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
