"""Device, autocast dtype and memory-format choices, with measured defaults per device.

Measured on the 2-core AVX2 development CPU (benchmarks/precision.py): bf16 autocast is 4–15×
slower than fp32 (no native bf16 there), channels_last is faster than NCHW for convnets. On CUDA,
bf16 autocast where the GPU supports it, fp16 + GradScaler only on request.
"""

from __future__ import annotations

import platform
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from lightship.errors import UserError


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype; None = fp32, no autocast
    channels_last: bool
    scaler: bool  # fp16 needs a GradScaler

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        """The precision, the device and the CPU in one phrase for printed lines: ``bf16 on cpu,
        AMD EPYC with native bf16 (AVX-512 BF16, no AMX)``."""
        where = "cpu," if self.device.type == "cpu" else f"{self.device}, CPU"
        return f"{self.name} on {where} {cpu_kind()}"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX, where bf16 autocast can pay off."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@cache
def cpu_kind() -> str:
    """A short description of this CPU: its model name and whether it computes bf16 natively,
    e.g. ``AMD EPYC with native bf16 (AVX-512 BF16, no AMX)``.

    ``train.precision: auto`` picks bf16 on a CPU with native bf16 and fp32 elsewhere, so the same
    recipe gives other numbers on another kind of CPU: runs, evaluations and studies record and
    print this next to the precision they used."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                name = " ".join(value.split())
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    avx512, amx = torch.cpu._is_avx512_bf16_supported(), torch.cpu._is_amx_tile_supported()
    if not (avx512 or amx):
        return f"{name} without native bf16"
    units = ", ".join([*(["AVX-512 BF16"] if avx512 else []), "AMX" if amx else "no AMX"])
    return f"{name} with native bf16 ({units})"


#: Device types lightship can train and evaluate on, and how to tell whether one is here.
DEVICE_TYPES = {
    "cpu": lambda: True,
    "cuda": lambda: torch.cuda.is_available(),
    "mps": lambda: torch.backends.mps.is_available(),
    "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
}


def choose_device(spec: str, key: str = "train.device") -> torch.device:
    """The device ``spec`` names, checked before anything is built or written: one that torch
    does not know, one lightship cannot compute on (``meta``) or one this machine lacks is a
    UserError naming ``key``."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise UserError(f"{key} '{spec}' is not a device; use auto, cpu, cuda") from None
    if device.type not in DEVICE_TYPES:
        raise UserError(f"{key} '{spec}': lightship cannot train or evaluate on {device.type} "
                        "devices; use auto, cpu, cuda (or mps, xpu where present)")
    if not DEVICE_TYPES[device.type]():
        raise UserError(f"{key} '{spec}' asked for {device.type.upper()} but none is visible on "
                        "this machine; use cpu or auto")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise UserError(f"{key} '{spec}' but this machine has {torch.cuda.device_count()} "
                        f"GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}; use one of them")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # train.precision's values


def choose_precision(precision: str, channels_last: bool | str, device: torch.device) -> Precision:
    """Resolve ``auto`` choices for this device (see the module docstring for the measurements)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision fp16 needs a CUDA GPU; use fp32 (or bf16) on CPU")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if channels_last == "auto":
        channels_last = True  # faster for convnets on both the development CPU and GPUs
    return Precision(device=device, dtype=dtype, channels_last=bool(channels_last),
                     scaler=precision == "fp16")
