"""Karpathy's recipe, automated: can the model overfit at all? Then Zhang et al.'s control.

With regularisation off (no dropout, no weight decay, no augmentation; MSE loss) the run's model,
optimiser, lr and schedule are trained by the real `fit` on:

1. one batch (batch_size images),
2. 1 % of the training split,
3. 10 % of the training split,

and each stage reports the eval-mode MSE on exactly the images it was fitted on, against the
MSE of the best constant on those images (their count variance). A model that cannot push one
batch far below that baseline has a broken pipeline: labels that do not match the images, a
frozen or dead network, an lr far off.

The control (Zhang et al. 2017, "Understanding deep learning requires rethinking
generalization") fits images whose counts were permuted (`shuffle_labels`): the network can
memorise them, but validation, scored on true counts, must stay at its baseline. If it does not,
labels leak into validation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from countnet.config import ConfigError, TrainConfig
from countnet.datasets import Splits, load_splits
from countnet.train import Diverged, evaluate, fit, pick_device, set_threads

# Optimiser steps on the single batch. The density head needs more than the sum head did: on
# one batch of 8 (tests/countnet/test_overfit_check.py) it reached 25 % of baseline_mse after 200
# steps and under 0.01 % after 400; the sum head reached 0.3 % after 200.
ONE_BATCH_STEPS = 400
STAGE_STEPS = 300  # optimiser steps for the 1 % and 10 % stages (rounded up to whole epochs)
CONTROL_STEPS = 600  # memorising random labels takes longer than fitting real ones
FRACTIONS = (0.01, 0.10)
FIT_THRESHOLD = 0.05  # one batch must reach < 5 % of its baseline MSE
MEMORISED_THRESHOLD = 0.25  # control: train MSE below this share of the baseline = memorised
NO_GENERALISATION = 0.8  # control: val MSE above this share of the val baseline = no leak
VAL_MONITOR = 16  # val images fit() scores each epoch (a monitor); all of val is scored at the end
EXIT_CANNOT_FIT = 1


@dataclass
class Stage:
    """One fit: how far below the baseline the eval-mode train MSE went, and what val did."""

    name: str
    samples: int
    epochs: int
    steps: int
    shuffled_labels: bool
    train_mse: float  # eval mode, on exactly the fitted images
    train_baseline_mse: float  # variance of the fitted counts: the best constant's MSE
    val_mse: float  # eval mode, the whole validation split, true counts
    val_baseline_mse: float  # variance of the validation counts (fit's baseline_mse)

    @property
    def train_ratio(self) -> float:
        return _ratio(self.train_mse, self.train_baseline_mse)

    @property
    def val_ratio(self) -> float:
        return _ratio(self.val_mse, self.val_baseline_mse)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_ratio": self.train_ratio, "val_ratio": self.val_ratio}


@dataclass
class OverfitReport:
    config: dict[str, Any]
    stages: list[Stage] = field(default_factory=list)
    control: Stage | None = None

    @property
    def one_batch_ok(self) -> bool:
        return bool(self.stages) and self.stages[0].train_ratio < FIT_THRESHOLD

    @property
    def control_memorised(self) -> bool | None:
        return None if self.control is None else self.control.train_ratio < MEMORISED_THRESHOLD

    @property
    def control_no_leak(self) -> bool | None:
        """None unless the control memorised: a net still learning the permuted counts can
        learn real counting on the way (a few permuted counts correlate with the true ones by
        chance, and the density head sums object evidence), so its val says nothing of a leak."""
        if self.control is None or not self.control_memorised:
            return None
        return self.control.val_ratio > NO_GENERALISATION

    def message(self) -> str:
        """The conclusion in one or two sentences."""
        if not self.stages:
            return "no stage ran"
        one = self.stages[0]
        if not self.one_batch_ok:
            return (f"FAILED: the model cannot fit one batch of {one.samples} images: eval-mode "
                    f"train MSE {one.train_mse:.4g} = {100 * one.train_ratio:.1f} % of the "
                    f"baseline {one.train_baseline_mse:.4g} after {one.steps} steps (needs < "
                    f"{100 * FIT_THRESHOLD:.0f} %). Something stops the model from fitting: "
                    "labels that do not match images, a frozen or dead network, an lr far off"
                    + ("; here freeze_body is on, so only the head learns." if
                       self.config.get("freeze_body") else "."))
        words = [f"ok: one batch fitted to {100 * one.train_ratio:.2f} % of its baseline MSE"]
        for s in self.stages[1:]:
            words.append(f"{s.name} to {100 * s.train_ratio:.1f} %")
        text = "; ".join(words) + "."
        if self.control is not None:
            c = self.control
            if not self.control_memorised:
                text += (f" Shuffled-label control: the network did NOT memorise the permuted "
                         f"counts (train {100 * c.train_ratio:.1f} % of baseline, needs < "
                         f"{100 * MEMORISED_THRESHOLD:.0f} %), so it cannot test for a leak; "
                         "raise --control-steps.")
                return text
            leak = ("validation stayed at the baseline" if self.control_no_leak
                    else "validation went BELOW the baseline: labels may leak into validation")
            text += (f" Shuffled-label control: the network memorised the permuted counts "
                     f"(train {100 * c.train_ratio:.1f} % of baseline); {leak} "
                     f"(val {100 * c.val_ratio:.0f} % of baseline).")
        return text

    def exit_code(self) -> int:
        return 0 if self.one_batch_ok else EXIT_CANNOT_FIT

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "stages": [s.to_dict() for s in self.stages],
                "control": None if self.control is None else self.control.to_dict(),
                "one_batch_ok": self.one_batch_ok, "control_memorised": self.control_memorised,
                "control_no_leak": self.control_no_leak, "message": self.message()}

    def table(self) -> str:
        head = (f"{'stage':<22} {'images':>7} {'steps':>6} {'train MSE':>10} {'baseline':>9} "
                f"{'ratio':>8} {'val MSE':>9} {'val base':>9} {'val ratio':>9}")
        rows = [head]
        for s in self.stages + ([self.control] if self.control else []):
            rows.append(f"{s.name:<22} {s.samples:>7} {s.steps:>6} {s.train_mse:>10.4g} "
                        f"{s.train_baseline_mse:>9.4g} {100 * s.train_ratio:>7.2f}% "
                        f"{s.val_mse:>9.4g} {s.val_baseline_mse:>9.4g} "
                        f"{100 * s.val_ratio:>8.1f}%")
        return "\n".join([*rows, "", self.message()])


def _ratio(mse: float, baseline: float) -> float:
    if baseline > 0:
        return mse / baseline
    return 0.0 if mse == 0 else math.inf


def regularisation_off(cfg: TrainConfig) -> TrainConfig:
    """The run's config with every regulariser off, MSE loss, and no control switches.

    lr_range is a range test, not a fit: it is replaced by onecycle.
    """
    return cfg.replace(dropout=0.0, weight_decay=0.0, augment="none", loss="mse",
                       shuffle_labels=False, val_equals_train=False,
                       schedule="onecycle" if cfg.schedule == "lr_range" else cfg.schedule)


def fit_stage(cfg: TrainConfig, splits: Splits, name: str, n: int, steps: int, *,
              shuffled: bool = False) -> Stage:
    """Fit the first n training images for about `steps` optimiser steps with the real `fit`."""
    n = max(1, min(n, len(splits.train_x)))
    x, y = splits.train_x[:n], splits.train_y[:n]  # (n, C, H, W), (n,)
    batches = math.ceil(n / cfg.batch_size)
    epochs = max(1, math.ceil(steps / batches))
    stage_cfg = cfg.replace(epochs=epochs, train_eval_size=min(n, VAL_MONITOR))
    monitor = Splits(x, y, splits.val_x[:VAL_MONITOR], splits.val_y[:VAL_MONITOR])
    try:
        model = fit(stage_cfg, splits=monitor).model  # the final (evaluated) weights
    except Diverged:  # a fit that blew up did not fit: its MSEs are reported as nan
        train_mse = val_mse = math.nan
    else:
        train_mse = evaluate(model, x, y, stage_cfg)["loss"]
        val_mse = evaluate(model, splits.val_x, splits.val_y, stage_cfg)["loss"]
    return Stage(name=name, samples=n, epochs=epochs, steps=epochs * batches,
                 shuffled_labels=shuffled, train_mse=train_mse,
                 train_baseline_mse=y.var(unbiased=False).item(),
                 val_mse=val_mse, val_baseline_mse=splits.val_y.var(unbiased=False).item())


def overfit_check(cfg: TrainConfig, *, one_batch_steps: int = ONE_BATCH_STEPS,
                  stage_steps: int = STAGE_STEPS, control_steps: int = CONTROL_STEPS,
                  fractions: tuple[float, ...] = FRACTIONS, control: bool = True,
                  stop_on_failure: bool = True) -> OverfitReport:
    """Run the recipe. Stops after the one-batch stage when it fails (nothing else is meaningful).

    The control fits the 1 % stage's images (the first fraction) with permuted counts.
    """
    if min(one_batch_steps, stage_steps, control_steps) < 1:
        raise ConfigError("steps: must be >= 1")
    cfg = regularisation_off(cfg)
    set_threads(cfg.threads)
    device = pick_device(cfg)
    splits = load_splits(cfg, device)
    report = OverfitReport(config=cfg.to_dict())
    report.stages.append(fit_stage(cfg, splits, "one batch", cfg.batch_size, one_batch_steps))
    if stop_on_failure and not report.one_batch_ok:
        return report
    n_train = len(splits.train_x)
    sizes = [max(cfg.batch_size, round(f * n_train)) for f in fractions]
    for f, n in zip(fractions, sizes, strict=True):
        report.stages.append(fit_stage(cfg, splits, f"{100 * f:g} % of train", n, stage_steps))
    if control:
        shuffled = load_splits(cfg.replace(shuffle_labels=True), device)
        n = sizes[0] if sizes else cfg.batch_size
        report.control = fit_stage(cfg, shuffled, "shuffled labels", n, control_steps,
                                   shuffled=True)
    return report
