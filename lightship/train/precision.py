"""Device, autocast dtype and memory-format choices, with measured defaults per device.

Measured on the 2-core AVX2 development CPU (benchmarks/precision.py): bf16 autocast is 4–15×
slower than fp32 (no native bf16 there), channels_last is faster than NCHW for convnets. On CUDA,
bf16 autocast where the GPU supports it, fp16 + GradScaler only on request.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

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

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AVX512-BF16 or AMX, where bf16 autocast can pay off."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


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


def choose_precision(precision: str, channels_last: bool | str, device: torch.device) -> Precision:
    """Resolve ``auto`` choices for this device (see the module docstring for the measurements)."""
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
