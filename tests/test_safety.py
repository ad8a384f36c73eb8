"""No code path unpickles an arbitrary file: a planted pickle whose ``__reduce__`` runs code is
refused with one clear line (exit 2) wherever lightship reads a checkpoint, a weights file or a
teacher, and the code never runs (its marker file is never created)."""

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch

from lightship.cli import main
from lightship.errors import UserError
from lightship.train.checkpoint import load_state
from lightship.train.loop import train
from lightship.weights import read_weights
from tests.conftest import tiny_recipe

ROOT = Path(__file__).resolve().parents[1] / "lightship"


class _Evil:
    """Unpickling this calls ``os.system`` (writes the marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > '{self.marker}'",)


class _EvilExec:
    """Unpickling this calls ``exec`` (writes the marker file without a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _evil_files(tmp: Path) -> dict[str, tuple[bytes, Path]]:
    """Malicious payloads in each shape a planted file can take, each with its own marker."""
    out = {}
    for name, cls in (("system", _Evil), ("exec", _EvilExec)):
        marker = tmp / f"marker-{name}"
        out[f"raw-{name}"] = (pickle.dumps({"optimizer": cls(marker)}), marker)
        marker_zip = tmp / f"marker-{name}-zip"
        path = tmp / f"{name}.zip.pt"
        torch.save({"epoch": 1, "optimizer": cls(marker_zip)}, path)  # torch's zip format
        out[f"torch-save-{name}"] = (path.read_bytes(), marker_zip)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safety")
    done = train(tiny_recipe(tmp / "done"), progress=False, quiet=True).run_dir
    part = train(tiny_recipe(tmp / "part"), progress=False, quiet=True,
                 stop_after_epochs=1).run_dir
    return done, part


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tag(run: Path) -> str:
    return json.loads((run / "checkpoints" / "last.json").read_text())["tag"]


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("lightship: error:")
    return err[0]


def _assert_refused(code: int, capsys, markers) -> str:
    line = _one_error_line(capsys)
    assert code == 2, line
    for m in markers:
        assert not m.exists(), f"planted code ran: {m}"
    return line


@pytest.mark.parametrize("kind", ["raw-system", "raw-exec", "torch-save-system",
                                  "torch-save-exec"])
def test_resume_refuses_a_planted_state_file(runs, tmp_path, capsys, kind):
    payload, marker = _evil_files(tmp_path)[kind]
    run = _copy(runs[1], tmp_path / "run")
    (run / "checkpoints" / f"{_tag(run)}.state.pt").write_bytes(payload)
    line = _assert_refused(main(["train", "--resume", str(run), "--no-progress"]), capsys,
                           [marker])
    assert re.search(r"refusing to load .*state\.pt", line)
    assert not (run / ".lock").exists()
    assert not (run / "weights.safetensors").exists()


@pytest.mark.parametrize("kind", ["raw-system", "torch-save-exec"])
def test_resume_refuses_planted_checkpoint_weights(runs, tmp_path, capsys, kind):
    payload, marker = _evil_files(tmp_path)[kind]
    run = _copy(runs[1], tmp_path / "run")
    (run / "checkpoints" / f"{_tag(run)}.safetensors").write_bytes(payload)
    line = _assert_refused(main(["train", "--resume", str(run), "--no-progress"]), capsys,
                           [marker])
    assert "not a readable safetensors file" in line


@pytest.mark.parametrize("kind", ["raw-system", "torch-save-exec"])
def test_eval_and_export_refuse_planted_weights(runs, tmp_path, capsys, kind):
    from lightship.export import export_run

    payload, marker = _evil_files(tmp_path)[kind]
    run = _copy(runs[0], tmp_path / "run")
    (run / "weights.safetensors").write_bytes(payload)
    line = _assert_refused(main(["eval", str(run)]), capsys, [marker])
    assert "not a readable safetensors file" in line
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(payload)
    _assert_refused(main(["eval", str(lone)]), capsys, [marker])
    for fmt in ("safetensors", "torchscript", "onnx"):
        with pytest.raises(UserError, match="not a readable safetensors file"):
            export_run(run, fmt, tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("as_run", [False, True])
def test_distill_refuses_a_planted_teacher(runs, tmp_path, capsys, as_run):
    payload, marker = _evil_files(tmp_path)["raw-system"]
    if as_run:
        teacher = _copy(runs[0], tmp_path / "teacher")
        (teacher / "weights.safetensors").write_bytes(payload)
    else:
        teacher = tmp_path / "teacher.safetensors"
        teacher.write_bytes(payload)
    args = ["distill", "--teacher", str(teacher), "--recipe", "baseline", "--model", "cnn4",
            "--data", "synthetic:n=96,classes=3,size=8,channels=1", "--epochs", "1",
            "--out", str(tmp_path / "runs"), "--name", "s", "--no-progress"]
    _assert_refused(main(args), capsys, [marker])
    assert not (tmp_path / "runs" / "s").exists()  # refused before the run folder was made


def test_the_payloads_are_live(tmp_path):
    """The planted files do run code when unpickled naively, so the refusals above mean it."""
    files = _evil_files(tmp_path)
    payload, marker = files["raw-exec"]
    pickle.loads(payload)
    assert marker.exists()
    payload, marker = files["torch-save-exec"]
    (tmp_path / "p.pt").write_bytes(payload)
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert marker.exists()


def test_library_loaders_refuse_every_payload(tmp_path):
    files = _evil_files(tmp_path)
    for kind, (payload, marker) in files.items():
        path = tmp_path / f"{kind}.bin"
        path.write_bytes(payload)
        with pytest.raises(UserError, match="refusing to load"):
            load_state(path)
        with pytest.raises(UserError, match="not a readable safetensors file"):
            read_weights(path)
        assert not marker.exists(), kind


def test_torn_and_foreign_state_files_are_one_line(runs, tmp_path):
    good = runs[1] / "checkpoints" / f"{_tag(runs[1])}.state.pt"
    cases = {"empty": b"", "torn": good.read_bytes()[: good.stat().st_size // 2],
             "garbage": os.urandom(256), "text": b"hello\n"}
    for name, data in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(UserError, match="refusing to load") as info:
            load_state(path)
        assert "\n" not in str(info.value), name
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)  # loadable, but not a state dict
    with pytest.raises(UserError, match="not a lightship state file"):
        load_state(tensor, required=("optimizer",))
    assert set(load_state(good, required=("optimizer", "step"))) >= {"optimizer", "step"}


def test_no_unsafe_loader_in_the_package():
    """The only deserialisers: safetensors, torch.load(weights_only=True), allowlisted CIFAR
    pickles and np.load(allow_pickle=False)."""
    found = []
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                found.append(f"{path.name}: {m.group(0)}")
        for pat in (r"torch\.jit\.load\(", r"pickle\.loads?\(", r"allow_pickle=True",
                    r"dill\.|cloudpickle|joblib\.load|torch\.package"):
            found += [f"{path.name}: {pat}" for _ in re.finditer(pat, text)]
        if "pickle.Unpickler" in text and "find_class" not in text:
            found.append(f"{path.name}: Unpickler without an allowlisting find_class")
    assert not found, found
