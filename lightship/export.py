"""`lightship export`: the trained light net alone, in a format other runtimes load.

Formats (one file each, plus a ``<file>.json`` sidecar with the same metadata):

- ``onnx``: ``torch.onnx.export(..., dynamo=True)``, the torch.export-based exporter. It is the
  default and recommended one since torch 2.9; the TorchScript-based one (``dynamo=False``) is
  deprecated and warns. It runs offline; it needs ``onnxscript`` (and ``onnx``), installed by
  ``pip install 'lightship[onnx]'``. Metadata goes into the model's ``metadata_props``.
- ``torchscript``: ``torch.jit.trace`` + ``torch.jit.save``. ``torch.jit`` is deprecated in torch
  2.14 (``trace`` and ``load`` warn and point at ``torch.export``) but still works, and a
  TorchScript archive is what ``--format torchscript`` promises: the one format libtorch (C++)
  and older PyTorch load without Python model code. ``torch.export``'s ``.pt2`` is a different
  format (Python runtime or AOTInductor), so it would not be TorchScript; ``script`` fails on
  some timm/torchvision models, which ``trace`` handles. Our models are plain
  feed-forward convnets, so tracing is exact; the trace is checked at a second batch size, so
  the batch dimension stays free. Metadata goes into the archive's extra file ``metadata.json``.
- ``safetensors``: the weights alone, with JSON-encoded metadata in the safetensors header; load
  them into ``lightship.models.create_model(...)`` (the plain registry model).

The exported net takes float32 NCHW images already normalised: ``x = (pixels / 255 - mean) / std``
per channel, at ``input_size`` × ``input_size``, and returns logits over ``classes``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightship.errors import UserError
from lightship.fileio import user_path

if TYPE_CHECKING:  # torch is imported when exporting, so `lightship --help` stays fast
    import torch
    from torch import nn

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
META_KEYS = ("model", "model_options", "num_classes", "in_chans", "input_size", "mean", "std",
             "classes")
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def _weights_file(target: Path) -> Path:
    """The final weights of a finished run folder, or a lightship .safetensors file itself."""
    from lightship.runs import RunPaths

    if not target.exists():
        raise UserError(f"{target} does not exist; give a run folder (or its weights.safetensors)")
    if target.is_dir():
        paths = RunPaths(target)
        if not paths.is_run():
            raise UserError(f"{target} is not a lightship run folder (no recipe.yaml)")
        if not paths.weights.exists():
            raise UserError(f"{target} has no weights.safetensors: the run is unfinished; "
                            f"finish it with `lightship train --resume {target}`")
        return paths.weights
    return target


def load_light_net(target: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the registry model of a run (or weights file) and load its final weights.

    Returns the model in eval mode on the CPU and the export metadata. The weights are read
    through safetensors only.
    """
    from lightship.weights import resolve_source

    weights = _weights_file(target)
    src = resolve_source(weights, role="export source")  # refuses files without our metadata
    meta = src.meta
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise UserError(f"{weights} has no lightship metadata ({', '.join(missing)} missing); "
                        "export the run folder it came from")
    model = src.build(meta["num_classes"], meta["in_chans"], meta["input_size"]).eval()
    info = {k: meta[k] for k in META_KEYS}
    info.update({
        "format": "lightship-export-1",
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_layout": "NCHW float32, x = (pixels / 255 - mean) / std per channel",
        "output": "logits (apply softmax for probabilities)",
        "run": weights.parent.name if target.is_dir() else None,
    })
    if "data" in meta:
        info["data"] = meta["data"]
    return model, info


def _out_path(target: Path, fmt: str, out: str | Path | None) -> Path:
    suffix = FORMATS[fmt]
    if out is None:
        base = target if target.is_dir() else target.parent
        folder = base / "export"
        folder.mkdir(exist_ok=True)
        return folder / f"model{suffix}"
    path = Path(out)
    if path.is_dir():
        return path / f"model{suffix}"
    if not path.parent.is_dir():
        raise UserError(f"output folder {path.parent} does not exist; create it or choose "
                        "another -o")
    return path


def _example(meta: dict[str, Any], batch: int) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(0)
    s = meta["input_size"]
    return torch.randn(batch, meta["in_chans"], s, s, generator=g)


def _export_onnx(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    import torch

    from lightship.fileio import atomic_write

    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs onnx and onnxscript; install them with "
                        "pip install 'lightship[onnx]'") from None
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress notes and upstream deprecations
        program = torch.onnx.export(model, (_example(meta, 2),), dynamo=True,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), external_data=False,
                                    verbose=False)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props.update({k: json.dumps(v) for k, v in meta.items()})
    atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))


def _export_torchscript(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    import torch

    from lightship.fileio import atomic_write

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice (see module docstring)
        with torch.no_grad():
            traced = torch.jit.trace(model, _example(meta, 2),
                                     check_inputs=[(_example(meta, 3),)])
        extra = {"metadata.json": json.dumps(meta)}
        atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))


def _export_safetensors(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    from lightship.weights import WEIGHTS_FORMAT, save_weights

    # The lightship weights format, so `lightship eval` and a distill teacher accept the file too.
    save_weights(path, model, {**meta, "format": WEIGHTS_FORMAT})


def export_run(target: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export the light net of a finished run folder; returns the written file.

    ``out`` is a file path or an existing folder (default: ``RUN_DIR/export/model.<ext>``). A
    ``<file>.json`` sidecar with the preprocessing metadata is written next to it.

    Raises:
        UserError: not a run, an unfinished run, an unknown format, a missing output folder, or
            a missing optional dependency (named with its install command).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    target = Path(target)
    model, meta = load_light_net(target)
    path = _out_path(target, fmt, out)
    meta = {**meta, "export_format": fmt}
    {"onnx": _export_onnx, "torchscript": _export_torchscript,
     "safetensors": _export_safetensors}[fmt](model, meta, path)
    from lightship.fileio import atomic_write_json

    atomic_write_json(path.with_name(path.name + ".json"), meta)
    return path


def cmd_export(args: argparse.Namespace) -> int:
    path = export_run(user_path(args.run_dir), args.format,
                      args.out and str(user_path(args.out)))
    print(f"exported {args.format} to {path} (metadata: {path.name}.json)")
    return 0


def add_export_parser(sub) -> argparse.ArgumentParser:
    """Add ``lightship export RUN_DIR --format onnx|torchscript|safetensors [-o OUT]``."""
    p = sub.add_parser("export", help="export a finished run's light net (onnx, torchscript, "
                       "safetensors) with its preprocessing metadata")
    p.add_argument("run_dir", metavar="RUN_DIR", help="finished run folder (or its "
                   "weights.safetensors)")
    p.add_argument("--format", "-f", required=True, choices=list(FORMATS),
                   help="onnx (needs pip install 'lightship[onnx]'), torchscript or safetensors")
    p.add_argument("-o", "--out", help="output file or existing folder (default "
                   "RUN_DIR/export/model.<ext>)")
    p.set_defaults(func=cmd_export)
    return p
