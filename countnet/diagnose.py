"""Why is the printed train loss above the validation loss? Measure each mechanism, with signs.

With the weights fixed, on one fixed set of training samples (fixed order, fixed RNG) and on the
validation set, `diagnose` measures:

- (a) val loss, eval mode;
- (b) train loss, eval mode, no augmentation;
- (c) train loss, eval mode, with the run's augmentation;
- (d) train loss with only the Dropout modules in train mode;
- (e) train loss with only the BatchNorm modules in train mode (batch statistics at the run's batch
  size; no_grad, running statistics restored afterwards);
- (t) train loss in the run's full training mode (`set_train_mode` + augmentation), in the
  precision the run trained in, with the evaluated weights;
- (r) the same with the trained weights, when the run evaluates an average of them
  (`ema_epochs` > 0, or schedulefree's own average): the loss the training loop would see at its
  last step. Without an average,
  or when only the averaged weights are at hand (a bundle), (r) = (t);
- (u) the same as (t) in fp32 (equal to (t) for an fp32 run): (t - u) is bf16 rounding;
- (f) the printed train loss of the epoch the weights come from (epoch mean of batch losses);
- (g) the weight-decay penalty (0.5 * wd * ||w||^2 over decayed params for SGD; 0 for AdamW,
  whose decay is decoupled). Neither optimiser adds it to the printed loss, so it is shown, never
  summed;
- (h) the split: count histograms, a bootstrap 95 % interval of the val loss and of the true gap,
  exact duplicate images across the splits.

This module measures; `countnet.diagnose_report` puts a Diagnosis into words (the verdict, the
plain-text table, the `--json` dict, the short verdict at the end of `countnet train`). Imports
run one way: the words import the measurements, never the reverse.

The attribution is an identity, so the rows add up exactly to the printed difference:

    f - a = (f - r)                          epoch-average lag
          + (r - t)                          weight averaging (trained vs evaluated weights)
          + (t - u)                          bf16 rounding of the training forward pass
          + (d - b)                          dropout
          + (e - b)                          BatchNorm batch statistics
          + (c - b)                          augmentation
          + (u - d - e - c + 2b)             interaction / residual
          - (a - b)                          true generalisation gap

(a) to (e) and (u) run in fp32. The printed val loss came from the run's own precision; it is
compared with (a) measured that way too.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from countnet.augment import augment_batch
from countnet.config import ConfigError, TrainConfig, evaluates_average
from countnet.datasets import Splits
from countnet.models import set_train_mode
from countnet.precision import autocast, resolve
from countnet.train import decayed_parameters, loss_function

DIAG_SEED = 1234  # subset choice, batch order, dropout masks and augmentation draws
DEFAULT_SAMPLES = 2000  # training samples measured, rounded down to whole batches
BOOTSTRAP_ROUNDS = 2000
CI_LEVEL = 0.95

DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

# Attribution rows: key, label, formula. The sign convention: each row is what it adds to f - a.
TERMS = (
    ("lag", "epoch-average lag", "f - r"),
    ("averaging", "weight averaging", "r - t"),
    ("precision", "bf16 rounding (training forward)", "t - u"),
    ("dropout", "dropout", "d - b"),
    ("batchnorm", "BatchNorm batch statistics", "e - b"),
    ("augmentation", "augmentation", "c - b"),
    ("interaction", "interaction / residual", "u - d - e - c + 2b"),
    ("minus_true_gap", "minus the true generalisation gap", "-(a - b)"),
)


@dataclass
class Diagnosis:
    """All measurements of one diagnosis (`countnet.diagnose_report` words them)."""

    source: str
    epoch: int | None
    samples: int  # training samples measured (whole batches of batch_size)
    batch_size: int
    mechanisms: dict[str, bool]  # which mechanisms the run's training mode actually has
    precision: str  # the precision the run trained in (t), "fp32" or "bf16"
    measurements: dict[str, float | None]  # a..g and t, see the module docstring
    printed_val_loss: float | None  # val_loss in the history row of the same epoch
    attribution: dict[str, float] | None  # TERMS keys -> contribution to f - a; None without f
    printed_difference: float | None  # f - a
    true_gap: float  # a - b
    true_gap_ci95: tuple[float, float]
    val_loss_ci95: tuple[float, float]
    split: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The measurements as plain values (`diagnose_report.diagnosis_json` adds the verdict)."""
        return asdict(self)


# --- modes -----------------------------------------------------------------------------------


def _training_mode_modules(model: nn.Module, cfg: TrainConfig) -> dict[str, list[nn.Module]]:
    """The Dropout and BatchNorm modules that are in train mode while the run trains.

    Asks `set_train_mode` itself (freeze_bn keeps BatchNorm in eval), so the
    diagnosis follows whatever the training loop does. Dropout with p = 0 is the identity.
    """
    was = {m: m.training for m in model.modules()}
    set_train_mode(model, cfg)
    dropout = [m for m in model.modules()
               if isinstance(m, DROPOUT_TYPES) and m.training and m.p > 0]
    batchnorm = [m for m in model.modules() if isinstance(m, BATCHNORM_TYPES) and m.training]
    for m, t in was.items():
        m.training = t
    return {"dropout": dropout, "batchnorm": batchnorm}


@contextlib.contextmanager
def forward_mode(model: nn.Module, train_modules: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode except `train_modules`; no_grad; buffers and modes restored on exit.

    A train-mode BatchNorm forward overwrites running_mean/var, even under no_grad: the buffers
    are copied before and written back after, so measuring never changes the model.
    """
    was = {m: m.training for m in model.modules()}
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.eval()
    for m in train_modules:
        m.train()
    try:
        with torch.no_grad():
            yield
    finally:
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            for name, b in saved.items():
                buffers[name].copy_(b)
        for m, t in was.items():
            m.training = t


def per_sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *,
                      train_modules: Sequence[nn.Module] = (), augment: bool = False,
                      batch_size: int | None = None, seed: int = DIAG_SEED,
                      precision: str = "fp32") -> torch.Tensor:
    """Loss of each sample (N,) on the CPU, in eval mode except `train_modules`.

    Batches are consecutive slices of x at `batch_size` (default: the run's). Dropout masks come
    from torch's RNG seeded with `seed` (forked, so the caller's RNG is untouched); augmentation
    draws from a CPU generator seeded with `seed`. Two calls with the same arguments see the same
    batches, masks and augmented images, so differences between modes are not sampling noise.
    """
    bs = batch_size or cfg.batch_size
    crit = loss_function(cfg)
    crit.reduction = "none"  # per-sample losses: bootstrap needs them; the mean is the loss
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    fork = [device] if device.type == "cuda" else []
    out = []
    with torch.random.fork_rng(devices=fork), forward_mode(model, train_modules):
        torch.manual_seed(seed)
        for i in range(0, len(x), bs):
            xb = x[i:i + bs].to(device)  # (b, C, H, W)
            if augment:
                xb = augment_batch(xb, cfg.augment, gen)
            with autocast(precision, device):
                pred = model(xb).float()  # (b,)
            out.append(crit(pred, y[i:i + bs].to(device).float()).cpu())
    return torch.cat(out) if out else torch.zeros(0)


# --- the measurements --------------------------------------------------------------------------


def weight_decay_penalty(model: nn.Module, cfg: TrainConfig) -> float:
    """(g): the L2 penalty the optimiser's update corresponds to, in loss units.

    torch SGD adds wd * w to the gradient: the gradient of 0.5 * wd * ||w||^2. AdamW decays the
    weights directly (decoupled), which is no term of any loss: 0. Decayed params are those
    `build_optimizer` decays (`decayed_parameters`).
    """
    if cfg.optimizer != "sgd" or cfg.weight_decay == 0:
        return 0.0
    total = sum(float(p.detach().double().pow(2).sum()) for p in decayed_parameters(model, cfg))
    return 0.5 * cfg.weight_decay * total


def _subset(n_train: int, samples: int, batch_size: int) -> torch.Tensor:
    """Fixed random training indices, a whole number of batches (BN sees full-size batches)."""
    n = min(samples, n_train)
    if n >= batch_size:
        n -= n % batch_size
    gen = torch.Generator().manual_seed(DIAG_SEED)
    return torch.randperm(n_train, generator=gen)[:n]


def _bootstrap_mean_ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(values), size=(BOOTSTRAP_ROUNDS, len(values)))
    means = values[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return float(lo), float(hi)


def _bootstrap_gap_ci(val: np.ndarray, train: np.ndarray,
                      rng: np.random.Generator) -> tuple[float, float]:
    """CI of mean(val) - mean(train), the two samples resampled independently."""
    vi = rng.integers(0, len(val), size=(BOOTSTRAP_ROUNDS, len(val)))
    ti = rng.integers(0, len(train), size=(BOOTSTRAP_ROUNDS, len(train)))
    gaps = val[vi].mean(axis=1) - train[ti].mean(axis=1)
    lo, hi = np.quantile(gaps, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2])
    return float(lo), float(hi)


def image_hashes(x: torch.Tensor) -> list[str]:
    """One digest per image of x (N, C, H, W), over its exact bytes."""
    arr = x.detach().cpu().contiguous().numpy()
    return [hashlib.blake2b(a.tobytes(), digest_size=16).hexdigest() for a in arr]


def split_report(splits: Splits) -> dict[str, Any]:
    """(h) without the CIs: count histograms of both splits and exact duplicates across them."""
    ty = splits.train_y.detach().cpu().round().long().numpy()
    vy = splits.val_y.detach().cpu().round().long().numpy()
    size = int(max(ty.max(initial=0), vy.max(initial=0))) + 1
    train_hashes = set(image_hashes(splits.train_x))
    dup = sum(h in train_hashes for h in image_hashes(splits.val_x))
    return {
        "train_size": len(ty), "val_size": len(vy),
        "train_count_hist": np.bincount(ty.clip(0), minlength=size).tolist(),
        "val_count_hist": np.bincount(vy.clip(0), minlength=size).tolist(),
        "train_count_mean": float(ty.mean()) if len(ty) else math.nan,
        "val_count_mean": float(vy.mean()) if len(vy) else math.nan,
        "train_count_var": float(ty.var()) if len(ty) else math.nan,
        "val_count_var": float(vy.var()) if len(vy) else math.nan,
        "val_duplicates_of_train": int(dup),
    }


def _history_row(history: Sequence[dict[str, Any]], epoch: int | None) -> dict[str, Any] | None:
    """The history row of `epoch` (the weights' epoch), else the last row."""
    if not history:
        return None
    if epoch is not None:
        for row in history:
            if int(row.get("epoch", -1)) == epoch:
                return dict(row)
    return dict(history[-1])


def diagnose(model: nn.Module, cfg: TrainConfig, splits: Splits,
             history: Sequence[dict[str, Any]] = (), *, samples: int = DEFAULT_SAMPLES,
             epoch: int | None = None, source: str = "",
             train_model: nn.Module | None = None) -> Diagnosis:
    """Measure (a)-(h) for `model` (weights of `epoch`, default: the last history row).

    Args:
        model: the evaluated weights (a run's averaged weights when it keeps an average).
        cfg, splits, history: the run's config, data and per-epoch metrics.
        samples: training samples measured.
        epoch: the weights' epoch (default: the last history row).
        source: the path diagnosed, for the report.
        train_model: the trained (not averaged) weights of the same epoch, when the run
            averages and they are at hand; they give (r) and the weight-averaging term.

    The models' modes, parameters and buffers are unchanged afterwards.
    """
    if samples < 1:
        raise ConfigError(f"--samples: must be >= 1, got {samples}")
    bs = cfg.batch_size
    idx = _subset(len(splits.train_x), samples, bs).to(splits.train_x.device)
    x, y = splits.train_x[idx], splits.train_y[idx]  # (n, C, H, W), (n,)
    mods = _training_mode_modules(model, cfg)
    has = {"dropout": bool(mods["dropout"]), "batchnorm": bool(mods["batchnorm"]),
           "augmentation": cfg.augment != "none"}

    run_precision = resolve(cfg.precision, x.device)

    def measure(train_modules: Sequence[nn.Module] = (), augment: bool = False,
                precision: str = "fp32") -> torch.Tensor:
        return per_sample_losses(model, x, y, cfg, train_modules=train_modules, augment=augment,
                                 precision=precision)

    lb = measure()
    # A mechanism the run does not have is the identity: its loss is b, bit for bit.
    lc = measure(augment=True) if has["augmentation"] else lb
    ld = measure(mods["dropout"]) if has["dropout"] else lb
    le = measure(mods["batchnorm"]) if has["batchnorm"] else lb
    all_modules = mods["dropout"] + mods["batchnorm"]
    lu = measure(all_modules, augment=has["augmentation"]) if any(has.values()) else lb
    lt = (lu if run_precision == "fp32"
          else measure(all_modules, augment=has["augmentation"], precision=run_precision))
    if train_model is not None:
        raw = _training_mode_modules(train_model, cfg)
        lr_ = per_sample_losses(train_model, x, y, cfg, train_modules=raw["dropout"]
                                + raw["batchnorm"], augment=has["augmentation"],
                                precision=run_precision)
    else:
        lr_ = lt

    def val_losses(precision: str) -> torch.Tensor:
        return per_sample_losses(model, splits.val_x, splits.val_y, cfg,
                                 batch_size=cfg.eval_batch_size, precision=precision)

    la = val_losses("fp32")
    a, b, c, d, e, t, u, r = (float(v.double().mean())
                              for v in (la, lb, lc, ld, le, lt, lu, lr_))
    # The run printed its val loss from a forward pass in its own precision.
    a_run = a if run_precision == "fp32" else float(val_losses(run_precision).double().mean())

    row = _history_row(history, epoch)
    f = float(row["train_loss"]) if row and row.get("train_loss") is not None else None
    printed_val = float(row["val_loss"]) if row and row.get("val_loss") is not None else None
    epoch_out = int(row["epoch"]) if row and "epoch" in row else epoch
    g = weight_decay_penalty(model, cfg)

    rng = np.random.default_rng(DIAG_SEED)
    la_np, lb_np = la.double().numpy(), lb.double().numpy()
    val_ci = _bootstrap_mean_ci(la_np, rng)
    gap_ci = _bootstrap_gap_ci(la_np, lb_np, rng)

    attribution = None
    diff = None
    if f is not None:
        diff = f - a
        attribution = {
            "lag": f - r, "averaging": r - t, "precision": t - u, "dropout": d - b,
            "batchnorm": e - b,
            "augmentation": c - b, "interaction": u - d - e - c + 2 * b,
            "minus_true_gap": -(a - b),
        }
    notes = []
    if printed_val is not None and not math.isclose(printed_val, a_run, rel_tol=1e-4,
                                                    abs_tol=1e-6):
        notes.append(f"measured val loss {a_run:.6g} differs from the printed {printed_val:.6g}: "
                     "the weights may not be those of that epoch")
    if evaluates_average(cfg) and train_model is None:
        notes.append("the run evaluates averaged weights (ema_epochs or schedulefree) and only "
                     "those are here, "
                     "so (r) = (t) and the lag row includes the weight averaging; diagnose the "
                     "run dir to split them")
    if cfg.freeze_bn:
        notes.append("BatchNorm statistics were frozen in training (freeze_bn): "
                     "no BatchNorm term")
    if g > 0:
        notes.append(f"SGD weight decay acts as a penalty of {g:.4g} in the objective; it is "
                     "not part of the printed train loss")
    split = split_report(splits)
    split["val_loss_ci95"] = list(val_ci)
    return Diagnosis(
        source=source, epoch=epoch_out, samples=len(idx), batch_size=bs, mechanisms=has,
        precision=run_precision,
        measurements={"a_val_loss": a, "b_train_eval": b, "c_train_augmented": c,
                      "d_train_dropout": d, "e_train_batchnorm": e, "t_train_mode": t,
                      "u_train_mode_fp32": u, "r_train_mode_trained_weights": r,
                      "f_printed_train_loss": f, "g_weight_decay_penalty": g},
        printed_val_loss=printed_val, attribution=attribution, printed_difference=diff,
        true_gap=a - b, true_gap_ci95=gap_ci, val_loss_ci95=val_ci, split=split, notes=notes)
