"""Score a model's counts against true counts: the figures of `countnet evaluate`.

The predicted count of an image is what `countnet predict` prints: max(0, round(raw)), since no
image holds fewer than 0 objects. Exact-count accuracy and off-by-one use that count; MAE, RMSE and
bias use the raw regression output, so they show how far off a model is before rounding hides it.
A non-finite raw output counts as wrong in acc and off_by_one and is left out of MAE, RMSE and
bias (which would otherwise all be inf or NaN); `non_finite` says how many there were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from countnet.bundle import load_model
from countnet.config import TrainConfig
from countnet.counter import Counter, Sizing, sizing_for
from countnet.errors import DataError
from countnet.folder import (
    LABELS_CSV,
    Row,
    carpk_split,
    check_inside,
    is_carpk,
    load_rows,
    read_labels_csv,
)
from countnet.precision import fast_path
from countnet.train import pick_device, predict

WORST_N = 10  # images listed as the worst
LOAD_CHUNK = 256  # images read and predicted at a time: bounds memory on big photo folders
SUMMARY_KEYS = ("n", "acc", "off_by_one", "mae", "rmse", "bias", "non_finite")


def predicted_counts(pred: np.ndarray) -> np.ndarray:
    """Raw outputs (N,) -> counts (N,) as `countnet predict` prints them; NaN where not finite."""
    counts = np.full(pred.shape, np.nan)
    ok = np.isfinite(pred)
    counts[ok] = np.maximum(0.0, np.round(pred[ok]))  # round half to even, like Python's round
    return counts


def _figures(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """n, acc, off_by_one, mae, rmse, bias, non_finite of raw outputs pred (N,) vs counts y (N,)."""
    ok = np.isfinite(pred)
    err = np.abs(predicted_counts(pred) - y)  # NaN where pred is not finite: never <= 1
    diff = pred[ok] - y[ok]
    nan = float("nan")
    return {"n": len(y),
            "acc": float(np.mean(err == 0)) if len(y) else nan,
            "off_by_one": float(np.mean(err <= 1)) if len(y) else nan,
            "mae": float(np.mean(np.abs(diff))) if len(diff) else nan,
            "rmse": float(np.sqrt(np.mean(diff**2))) if len(diff) else nan,
            "bias": float(np.mean(diff)) if len(diff) else nan,
            "non_finite": int((~ok).sum())}


def score(pred: Sequence[float] | np.ndarray | torch.Tensor, y: Sequence[float] | np.ndarray |
          torch.Tensor, names: Sequence[str] | None = None) -> dict[str, Any]:
    """All figures of one folder: the summary, a table by true count and the worst images.

    Args:
        pred: raw predicted counts (N,); NaN or inf are allowed (counted as wrong).
        y: true counts (N,).
        names: image names (N,) for the worst list; indices when omitted.

    Returns:
        {"n", "acc", "off_by_one", "mae", "rmse", "bias", "non_finite",
         "by_count": [{"count", "n", "mae", "acc", "bias"}, ...] in increasing true count,
         "worst": [{"name", "true", "pred"}, ...] (WORST_N, largest |error| first)}.
    """
    pred_np = np.asarray(torch.as_tensor(pred, dtype=torch.float64).cpu())  # (N,)
    y_np = np.asarray(torch.as_tensor(y, dtype=torch.float64).cpu())  # (N,)
    if pred_np.shape != y_np.shape or pred_np.ndim != 1:
        raise ValueError(f"pred {pred_np.shape} and y {y_np.shape} must be (N,) alike")
    names = list(names) if names is not None else [str(i) for i in range(len(y_np))]
    out = _figures(pred_np, y_np)
    out["by_count"] = []
    for count in np.unique(y_np):
        sel = y_np == count
        row = _figures(pred_np[sel], y_np[sel])
        out["by_count"].append({"count": _number(count), "n": row["n"], "mae": row["mae"],
                                "acc": row["acc"], "bias": row["bias"]})
    # Worst first: non-finite outputs rank above every finite error; ties keep folder order.
    error = np.where(np.isfinite(pred_np), np.abs(pred_np - y_np), np.inf)
    order = np.argsort(-error, kind="stable")[:WORST_N]
    out["worst"] = [{"name": names[i], "true": _number(y_np[i]), "pred": float(pred_np[i])}
                    for i in order]
    return out


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """Only the headline figures (SUMMARY_KEYS) of a `score` result."""
    return {k: figures[k] for k in SUMMARY_KEYS}


def predict_rows(model: nn.Module, cfg: TrainConfig, root: Path, rows: list[Row],
                 device: torch.device | None = None, sizing: Sizing | None = None) -> torch.Tensor:
    """Raw counts (N,) float32 for the images of `rows`, read from `root` in chunks.

    Runs in the fast path the model trained in: its precision (`precision.resolve`) and, when
    the config asks for it, channels_last.

    Args:
        model: the model, in eval mode.
        cfg: its TrainConfig (image size, channels, batch size, device, precision).
        root: the folder the rows' file names are relative to.
        rows: labels rows (from `read_labels_csv`).
        device: where to run. By default the config's device, except that a model trained on
            CUDA falls back to the CPU where there is none (as `countnet predict` does).
        sizing: native (each image at its own size, in tiles, one at a time) or resized to
            image_size (batched); by default what `counter.sizing_for(cfg)` picks.
    """
    if device is None:
        device = pick_device(cfg.replace(device="auto" if cfg.device == "cuda" else cfg.device))
    sizing = sizing if sizing is not None else sizing_for(cfg)
    if sizing.native:
        counter = Counter(model, cfg, device, sizing)
        counts = []
        for row in rows:
            try:
                image = counter.load(root / check_inside(row.name, row.where))  # (C, H, W)
            except DataError as e:
                raise DataError(f"{row.where}: {e}") from None
            counts.append(counter.count(image).count)
        return torch.tensor(counts, dtype=torch.float32)
    precision, layout = fast_path(model, cfg, device)
    preds = []
    for start in range(0, len(rows), LOAD_CHUNK):
        # The path photos take: files -> resized (n, C, H, W) float32 in [0, 1].
        x, _ = load_rows(root, rows[start:start + LOAD_CHUNK], cfg.image_size, cfg.channels)
        x = x.to(device).contiguous(memory_format=layout)
        preds.append(predict(model, x, cfg.eval_batch_size, precision).float().cpu())
    return torch.cat(preds)


def labelled_rows(root: Path) -> list[Row]:
    """The labelled images of a folder: its labels.csv, or, in the CARPK layout without one,
    the test split (`ImageSets/test.txt`, counts from the boxes)."""
    if not (root / LABELS_CSV).is_file() and is_carpk(root):
        return carpk_split(root, "test")
    return read_labels_csv(root / LABELS_CSV)


def evaluate_loaded(model: nn.Module, cfg: TrainConfig, folder: str | Path,
                    sizing: Sizing | None = None) -> dict[str, Any]:
    """`score` of a loaded model on a labelled folder.

    Args:
        model: the model, in eval mode.
        cfg: its TrainConfig.
        folder: a folder holding labels.csv (filename,count) and the images it names, or a
            CARPK root (its test split).
        sizing: native or resized input; by default `counter.sizing_for(cfg)`.
    """
    root = Path(folder)
    rows = labelled_rows(root)
    pred = predict_rows(model, cfg, root, rows, sizing=sizing)
    return score(pred, [r.count for r in rows], [r.name for r in rows])


def evaluate_folder(model_path: str | Path, folder: str | Path, *, native: bool = False,
                    scale: float | None = None) -> dict[str, Any]:
    """`score` of a bundle, run dir or checkpoint on a labelled folder (or a CARPK root).

    Args:
        model_path: exported bundle dir, run dir, or checkpoint.
        folder: a folder holding labels.csv (filename,count) and the images it names, or a
            CARPK root (its test split).
        native: count each image at its own size (in tiles), not resized to image_size.
        scale: resize each image by this factor first (implies native).

    Raises:
        DataError: no labels.csv, a malformed row, or a missing or undecodable image.
        ConfigError: a scale that is not > 0.
    """
    model, cfg = load_model(model_path)
    return evaluate_loaded(model, cfg, folder, sizing_for(cfg, native, scale))


def _number(v: float) -> int | float:
    """A count as an int when it is whole (labels may hold fractional counts)."""
    return int(v) if math.isfinite(v) and float(v).is_integer() else float(v)
