from __future__ import annotations

import pytest
import torch

from countnet.precision import autocast, cpu_has_native_bf16, resolve


def test_auto_is_fp32_on_a_cpu_without_native_bf16() -> None:
    assert resolve("auto", "cpu", cpu_bf16=False) == "fp32"
    assert resolve("auto", "cpu", cpu_bf16=True) == "bf16"


def test_auto_follows_this_cpu_and_explicit_values_win() -> None:
    assert resolve("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    for p in ("fp32", "bf16"):
        assert resolve(p, "cpu", cpu_bf16=p != "bf16") == p


@pytest.mark.parametrize("precision,dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_autocast_runs_convolutions_in_the_resolved_dtype(precision, dtype) -> None:
    conv = torch.nn.Conv2d(1, 2, 3)
    with autocast(precision, torch.device("cpu")):
        out = conv(torch.rand(1, 1, 8, 8))
    assert out.dtype == dtype
