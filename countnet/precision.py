"""Which arithmetic a run trains and evaluates in: `precision: auto | fp32 | bf16`.

`auto` picks bf16 autocast where the hardware does bf16 natively: CUDA GPUs that support it, and
CPUs whose torch build reports native bf16 (oneDNN on AMX or avx512_bf16). There, the default net
trains about 3x faster (bench/precision.py). Everywhere else bf16 would be emulated and slower,
so `auto` is fp32. Weights, losses and metrics stay fp32 in either case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from countnet.config import TrainConfig


def cpu_has_native_bf16() -> bool:
    """True when torch's oneDNN reports native bf16 on this CPU (AMX or avx512_bf16)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # builds without oneDNN
        return False


def resolve(precision: str, device: torch.device | str, *,
            cpu_bf16: bool | None = None) -> str:
    """The precision a run uses: "fp32" or "bf16".

    Args:
        precision: the config's value, auto | fp32 | bf16.
        device: the training device.
        cpu_bf16: override of `cpu_has_native_bf16()` (for tests); None asks torch.
    """
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16
    return "bf16" if native else "fp32"


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when `precision` (already resolved) is bf16; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def fast_path(model: torch.nn.Module, cfg: TrainConfig,
              device: torch.device) -> tuple[str, torch.memory_format]:
    """Put `model` on `device` in the run's memory layout; return (precision, input layout).

    Evaluation and prediction run the way the model trained (bf16 autocast, channels_last), so
    `countnet evaluate`, `countnet predict` and the training loop's val figures agree.
    """
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    return resolve(cfg.precision, device), layout
