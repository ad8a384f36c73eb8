"""`lightship export`: each format reloads outside lightship's training code and gives the same
logits as the PyTorch model, with the preprocessing metadata attached; bad input is one line."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lightship.cli import main
from lightship.errors import UserError
from lightship.export import add_export_parser, export_run, load_light_net
from lightship.models import create_model
from lightship.train.loop import train
from tests.conftest import tiny_recipe

META = ("model", "model_options", "num_classes", "in_chans", "input_size", "mean", "std",
        "classes")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    return train(tiny_recipe(tmp), progress=False, quiet=True).run_dir


@pytest.fixture(scope="module")
def reference(run_dir):
    model, meta = load_light_net(run_dir)
    x = torch.randn(5, meta["in_chans"], meta["input_size"], meta["input_size"],
                    generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, meta, x, model(x)


def _check_meta(meta, ref_meta):
    for key in META:
        assert meta[key] == ref_meta[key], key
    assert meta["classes"] == ["0", "1", "2"] or len(meta["classes"]) == 3
    assert len(meta["mean"]) == len(meta["std"]) == meta["in_chans"] == 1


def _sidecar(path):
    return json.loads(path.with_name(path.name + ".json").read_text())


def test_onnx_matches_pytorch_in_onnxruntime(run_dir, reference, tmp_path):
    pytest.importorskip("onnxscript", reason="ONNX export needs pip install 'lightship[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed")
    _, ref_meta, x, logits = reference
    path = export_run(run_dir, "onnx", tmp_path / "net.onnx")
    assert path == tmp_path / "net.onnx" and path.exists()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # dynamic batch dimension
    for n in (5, 1):  # other batch sizes than the export example (2)
        (out,) = sess.run(None, {"input": x[:n].numpy()})
        assert torch.allclose(torch.from_numpy(out), logits[:n], atol=1e-4, rtol=1e-4)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    _check_meta(props, ref_meta)
    assert sess.get_modelmeta().custom_metadata_map["mean"] == json.dumps(ref_meta["mean"])
    _check_meta(_sidecar(path), ref_meta)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_reload_matches(run_dir, reference, tmp_path):
    _, ref_meta, x, logits = reference
    path = export_run(run_dir, "torchscript", tmp_path)
    assert path == tmp_path / "model.pt"
    extra = {"metadata.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    _check_meta(json.loads(extra["metadata.json"]), ref_meta)
    with torch.no_grad():
        for n in (5, 1):
            assert torch.allclose(loaded(x[:n]), logits[:n], atol=1e-6, rtol=1e-5)
    _check_meta(_sidecar(path), ref_meta)


def test_safetensors_loads_into_the_plain_registry_model(run_dir, reference, tmp_path):
    _, ref_meta, x, logits = reference
    path = export_run(run_dir, "safetensors", tmp_path / "w.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta = {k: json.loads(v) for k, v in fh.metadata().items()}
    _check_meta(meta, ref_meta)
    options = dict(meta["model_options"])
    model = create_model(options.pop("name"), meta["num_classes"], meta["in_chans"],
                         meta["input_size"], **options)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    same = load_file(str(run_dir / "weights.safetensors"))
    assert all(torch.equal(same[k], v) for k, v in load_file(str(path)).items())


def test_default_output_goes_to_the_run_export_folder(run_dir):
    path = export_run(run_dir, "safetensors")
    assert path == run_dir / "export" / "model.safetensors"
    assert (run_dir / "export" / "model.safetensors.json").exists()


def test_cli_export(run_dir, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="lightship")
    add_export_parser(parser.add_subparsers())
    args = parser.parse_args(["export", str(run_dir), "--format", "torchscript", "-o",
                              str(tmp_path / "cli.pt")])
    assert args.func(args) == 0
    assert (tmp_path / "cli.pt").exists()
    assert "cli.pt" in capsys.readouterr().out


def test_bad_input_is_one_clear_line(run_dir, tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a lightship run folder"):
        export_run(tmp_path / "plain", "safetensors")
    with pytest.raises(UserError, match="does not exist"):
        export_run(tmp_path / "nope", "safetensors")
    with pytest.raises(UserError, match="output folder .* does not exist"):
        export_run(run_dir, "safetensors", tmp_path / "missing" / "w.safetensors")
    with pytest.raises(UserError, match="unknown export format 'tflite'"):
        export_run(run_dir, "tflite")
    part = train(tiny_recipe(tmp_path), progress=False, quiet=True, stop_after_epochs=1)
    with pytest.raises(UserError, match="unfinished.*--resume"):
        export_run(part.run_dir, "onnx")
    assert not (part.run_dir / "export").exists()


def test_missing_onnx_names_the_install_command(run_dir, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"pip install 'lightship\[onnx\]'"):
        export_run(run_dir, "onnx", tmp_path)
    assert not (tmp_path / "model.onnx").exists()


def test_cli_wiring_exit_codes(run_dir, tmp_path, capsys):
    if "export" not in main.__globals__["make_parser"]().format_help():
        pytest.skip("`lightship export` is not wired into lightship.cli yet")
    assert main(["export", str(run_dir), "--format", "safetensors", "-o",
                 str(tmp_path / "x.safetensors")]) == 0
    assert main(["export", str(tmp_path / "nope"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightship: error:")
