"""The training loop, with honest losses. Knows nothing of Ray: callers pass `on_epoch_end`.

Per epoch it reports three losses that frameworks usually conflate:
- `train_loss`: the mean of the batch losses over the epoch, in train mode, while the weights were
  still moving. This is what frameworks print; it lags behind the model at the end of the epoch.
- `train_loss_eval`: a fixed training subset, in eval mode, without augmentation, after the epoch.
- `val_loss`: the validation set, in eval mode, after the epoch.
`gap` = val_loss - train_loss_eval compares like with like.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from countnet.augment import augment_batch
from countnet.checkpoint import load_checkpoint, save_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.datasets import Splits, load_splits
from countnet.models import load_pretrained, model_from_config, set_train_mode
from countnet.precision import autocast, resolve

METRIC_KEYS = ("epoch", "lr_now", "train_loss", "train_loss_eval", "val_loss", "val_mae",
               "val_acc", "val_off_by_one", "gap", "baseline_mse", "epoch_time_s", "images_per_s")
# Fields that may differ between a checkpoint and the run that resumes it.
RESUME_FREE_FIELDS = ("device", "threads", "eval_batch_size")
DIVERGENCE_CHECK_EVERY = 20  # steps between finiteness checks (each one syncs a GPU)
LR_RANGE_START = 1e-3  # lr_range starts at lr * this
# schedulefree with BatchNorm: training batches (no_grad) that re-estimate the running statistics
# for the averaged weights before each evaluation (the package's advice: about 50)
BN_REFRESH_BATCHES = 50

SaveFn = Callable[[str | Path], Path]
EpochCallback = Callable[[dict[str, float], SaveFn], None]
ProgressFn = Callable[[int, int, float], None]


@dataclass
class FitResult:
    """What `fit` returns: the evaluated model, its config and one METRIC_KEYS dict per epoch.

    `model` is the trainer's eval_model after the last epoch: the EMA of the weights when
    ema_epochs > 0, else the trained weights (the weights checkpoints/last holds).
    """

    model: nn.Module
    config: TrainConfig
    history: list[dict[str, float]]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the epoch's metrics were already reported."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"training diverged in epoch {epoch} (non-finite loss)")
        self.epoch = epoch


def pick_device(cfg: TrainConfig) -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(n: int) -> None:
    """Set torch's intra-op threads (n <= 0 leaves torch's default)."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def loss_function(cfg: TrainConfig) -> nn.Module:
    """MSE or Huber (delta = 1 object), averaged over the batch."""
    return nn.HuberLoss(delta=1.0) if cfg.loss == "huber" else nn.MSELoss()


def decayed_parameters(model: nn.Module, cfg: TrainConfig) -> list[nn.Parameter]:
    """The parameters weight decay applies to: trainable ones, less BatchNorm weights and biases
    when wd_exclude_bn_bias (the one rule, used by the optimiser and the diagnosis)."""
    return [p for name, p in model.named_parameters() if p.requires_grad
            and not (cfg.wd_exclude_bn_bias and (p.ndim <= 1 or name.endswith(".bias")))]


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    steps_per_epoch: int = 1) -> torch.optim.Optimizer:
    """AdamW, SGD+momentum or Schedule-Free AdamW (warm-up of warmup_epochs x steps_per_epoch
    steps); optionally no weight decay on BatchNorm weights and biases."""
    decay = decayed_parameters(model, cfg)
    decayed = {id(p) for p in decay}  # by identity: a tensor's == is elementwise
    no_decay = [p for p in model.parameters() if p.requires_grad and id(p) not in decayed]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.schedule == "schedulefree":
        import schedulefree  # only its runs need it

        return schedulefree.AdamWScheduleFree(
            groups, lr=cfg.lr, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch))
    return torch.optim.AdamW(groups, lr=cfg.lr)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    """torch's own schedulers, stepped once per batch (schedulefree: none, a constant factor 1;
    the optimiser warms up by itself)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "lr_range":
        # Exponential rise from lr * LR_RANGE_START to lr over the run (Smith's LR range test).
        for g in opt.param_groups:
            g["lr"] = cfg.lr * LR_RANGE_START
        gamma = (1.0 / LR_RANGE_START) ** (1.0 / max(1, total - 1))
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 500,
            precision: str = "fp32") -> torch.Tensor:
    """Raw counts (N,) in fp32 for images x (N, C, H, W), in the model's current mode.

    Args:
        model: the net, on x's device.
        x: images (N, C, H, W) in [0, 1].
        batch_size: images per forward pass.
        precision: "fp32" or "bf16" (already resolved, see countnet.precision.resolve).
    """
    outs = []
    for i in range(0, len(x), batch_size):
        with autocast(precision, x.device):
            outs.append(model(x[i:i + batch_size]).float())  # (b,)
    return torch.cat(outs) if outs else x.new_zeros(0)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
             precision: str = "fp32") -> dict[str, float]:
    """Eval-mode loss, MAE, exact-count accuracy and off-by-<=1 rate. Restores the model's mode.

    The forward pass runs in `precision`, the loss and metrics in fp32.
    """
    was_training = model.training
    model.eval()
    pred = predict(model, x, cfg.eval_batch_size, precision)  # (N,)
    model.train(was_training)
    err = (pred.round() - y).abs()
    return {"loss": loss_function(cfg)(pred, y).item(), "mae": (pred - y).abs().mean().item(),
            "acc": (err == 0).float().mean().item(), "off_by_one": (err <= 1).float().mean().item()}


def region_counts(density: torch.Tensor, cell: int) -> torch.Tensor:
    """Counts of cell x cell blocks of a density map (B, 1, h, w) -> (B, 1, h/cell, w/cell),
    partial blocks at the right and bottom edges included."""
    if cell <= 1:
        return density
    return F.avg_pool2d(density, cell, stride=cell, ceil_mode=True, divisor_override=1)


def density_region_loss(pred: torch.Tensor, target: torch.Tensor, cell_px: int) -> torch.Tensor:
    """Squared error of the counts of cell_px x cell_px regions, summed over the regions and
    averaged over the batch: where the objects are, in units of objects like the count loss.

    Args:
        pred: the model's density (B, 1, h, w), fp32.
        target: the density target at input resolution (B, 1, H, W), mass = count; pooled to
            (h, w) by sums (its mass is kept), so any output stride fits.
        cell_px: region side in input px (TrainConfig.density_cell).
    """
    h, w = pred.shape[-2:]
    big_h, big_w = target.shape[-2:]
    at_pred = F.adaptive_avg_pool2d(target, (h, w)) * (big_h * big_w / (h * w))  # (B, 1, h, w)
    cell = max(1, round(cell_px * h / big_h))  # output positions per region side
    diff = region_counts(pred, cell) - region_counts(at_pred, cell)
    return diff.pow(2).sum((1, 2, 3)).mean()


def ema_decay(ema_epochs: float, steps_per_epoch: int) -> float:
    """Per-step decay of an EMA whose time constant is `ema_epochs` epochs (1 / (1 - decay) steps).

    In epochs, not steps, so one setting suits 200 images and 12,000 alike.
    """
    return 1.0 - 1.0 / max(1.0, ema_epochs * steps_per_epoch)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of one epoch's shuffling, augmentation and dropout: resuming needs no RNG replay."""
    return seed * 1_000_003 + epoch


class _Trainer:
    """The mutable state of one run: model, optimiser, scheduler, epoch, history."""

    def __init__(self, cfg: TrainConfig, splits: Splits, device: torch.device) -> None:
        self.cfg, self.splits, self.device = cfg, splits, device
        self.precision = resolve(cfg.precision, device)
        torch.manual_seed(cfg.seed)
        model = model_from_config(cfg)
        load_pretrained(model, cfg)
        self.model = model.to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.steps = math.ceil(len(splits.train_x) / cfg.batch_size)
        self.opt = build_optimizer(self.model, cfg, self.steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.sched = build_scheduler(self.opt, cfg, self.steps)
        # The evaluated weights: an exponential moving average of the trained ones (torch's own
        # AveragedModel; BatchNorm buffers averaged too), or the trained ones themselves.
        self.ema: AveragedModel | None = None
        # Schedule-free: the optimiser swaps the model between its training point (opt.train())
        # and its averaged point (opt.eval()), which is what is evaluated and saved as "model".
        self.schedule_free = cfg.schedule == "schedulefree"
        if cfg.ema_epochs > 0:
            self.ema = AveragedModel(
                self.model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(cfg.ema_epochs,
                                                                        self.steps)),
                use_buffers=True)
        self.crit = loss_function(cfg)
        # Where the objects are (box-annotated crops), when the density loss is on.
        self.density = splits.train_density if cfg.density_loss > 0 else None
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        n_eval = min(len(splits.val_x), cfg.train_eval_size, len(splits.train_x))
        self.train_eval_x, self.train_eval_y = splits.train_x[:n_eval], splits.train_y[:n_eval]
        self.val_x = splits.val_x
        if cfg.channels_last:  # evaluation inputs in the model's layout, converted once
            self.train_eval_x = self.train_eval_x.contiguous(memory_format=torch.channels_last)
            self.val_x = self.val_x.contiguous(memory_format=torch.channels_last)
        self.baseline_mse = splits.val_y.var(unbiased=False).item()

    @property
    def eval_model(self) -> nn.Module:
        """The weights that evaluation, checkpoints' "model" and bundles use (schedulefree: the
        model itself, which holds the averaged point between epochs)."""
        return self.ema.module if self.ema is not None else self.model

    def state(self) -> dict[str, Any]:
        """Everything to resume from; called between epochs (schedulefree: in its eval mode)."""
        state = {"model": self.eval_model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict(), "epoch": self.epoch,
                 "rng": torch.get_rng_state(), "config": self.cfg.to_dict(),
                 "history": list(self.history)}
        if self.ema is not None:  # the optimiser's own weights, to resume from
            state["train_model"] = self.model.state_dict()
            state["ema_n_averaged"] = self.ema.n_averaged.clone()
        elif self.schedule_free:  # the training point, for the diagnosis (resuming needs x only)
            state["model"] = {k: v.clone() for k, v in state["model"].items()}
            self.opt.train()
            state["train_model"] = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.opt.eval()
        return state

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(directory, self.state())

    def restore(self, path: str | Path) -> None:
        state = load_checkpoint(path, map_location=self.device)
        saved = TrainConfig.from_dict(state["config"]).to_dict()
        wanted = self.cfg.to_dict()
        diff = [k for k in wanted if k not in RESUME_FREE_FIELDS and saved[k] != wanted[k]]
        if diff:
            raise ConfigError(f"resume: checkpoint {path} was trained with other values of "
                              f"{', '.join(diff)}")
        if self.ema is not None:
            if "train_model" not in state:
                raise ConfigError(f"resume: checkpoint {path} holds no trained weights beside "
                                  "the averaged ones (written before countnet 0.2, or with "
                                  "ema_epochs 0); train anew")
            self.model.load_state_dict(state["train_model"])
            self.ema.module.load_state_dict(state["model"])
            self.ema.n_averaged.copy_(state["ema_n_averaged"])
        else:  # schedulefree: the averaged point, with its optimiser state in eval mode
            self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
        torch.set_rng_state(state["rng"].cpu())

    def train_epoch(self, progress: ProgressFn | None) -> tuple[float, float, float]:
        """One pass in train mode. Returns (mean batch loss, last lr, seconds)."""
        cfg, x, y = self.cfg, self.splits.train_x, self.splits.train_y
        seed = epoch_seed(cfg.seed, self.epoch)
        torch.manual_seed(seed)  # dropout draws
        gen = torch.Generator().manual_seed(seed)  # shuffle + augmentation draws, on the CPU
        perm = torch.randperm(len(x), generator=gen).to(self.device)
        set_train_mode(self.model, cfg)
        if self.schedule_free:
            self.opt.train()
        total = torch.zeros((), device=self.device)
        seen, lr = 0, self.opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        for step in range(self.steps):
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if self.density is None:
                xb = augment_batch(x[idx], cfg.augment, gen)  # (b, C, H, W)
            else:  # one draw of flips for the image and its target: they must stay aligned
                both = augment_batch(torch.cat([x[idx], self.density[idx]], 1), cfg.augment, gen,
                                     image_channels=x.shape[1])
                xb, target = both[:, :-1], both[:, -1:]  # (b, C, H, W), (b, 1, H, W)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(self.precision, self.device):
                if self.density is None:
                    pred = self.model(xb)  # (b,)
                else:
                    dmap = self.model.density_map(xb)  # (b, 1, h, w) fp32
                    pred = dmap.sum((1, 2, 3))  # (b,)
            loss = self.crit(pred.float(), y[idx])  # what train_loss reports: the count's loss
            objective = loss
            if self.density is not None:
                objective = loss + cfg.density_loss * density_region_loss(dmap, target,
                                                                          cfg.density_cell)
            self.opt.zero_grad(set_to_none=True)
            objective.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
            self.opt.step()
            # the lr of this step (schedulefree logs its warmed-up lr as scheduled_lr)
            lr = self.opt.param_groups[0].get("scheduled_lr", self.opt.param_groups[0]["lr"])
            self.sched.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total += loss.detach() * len(idx)
            seen += len(idx)
            if progress is not None or step % DIVERGENCE_CHECK_EVERY == 0:
                value = loss.item()
                if progress is not None:
                    progress(step + 1, self.steps, value)
                if not math.isfinite(value):
                    break
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return (total / seen).item(), lr, time.perf_counter() - t0

    def _refresh_batchnorm(self) -> None:
        """Running statistics for the weights being evaluated (torch's `update_bn`), when they
        are not the ones the batches ran through: schedulefree's average. A no-op without BN."""
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            return
        n = min(len(self.splits.train_x), BN_REFRESH_BATCHES * self.cfg.batch_size)
        batches = self.splits.train_x[:n].split(self.cfg.batch_size)
        with autocast(self.precision, self.device):
            torch.optim.swa_utils.update_bn(batches, self.model, self.device)

    def run_epoch(self, progress: ProgressFn | None) -> dict[str, float]:
        t0 = time.perf_counter()
        self.epoch += 1
        train_loss, lr, train_time = self.train_epoch(progress)
        if self.schedule_free:
            self.opt.eval()  # the model now holds the averaged point
            self._refresh_batchnorm()
        model, cfg, prec = self.eval_model, self.cfg, self.precision
        tr = evaluate(model, self.train_eval_x, self.train_eval_y, cfg, prec)
        va = evaluate(model, self.val_x, self.splits.val_y, cfg, prec)
        metrics = {
            "epoch": self.epoch, "lr_now": lr, "train_loss": train_loss,
            "train_loss_eval": tr["loss"], "val_loss": va["loss"], "val_mae": va["mae"],
            "val_acc": va["acc"], "val_off_by_one": va["off_by_one"],
            "gap": va["loss"] - tr["loss"], "baseline_mse": self.baseline_mse,
            "epoch_time_s": time.perf_counter() - t0,
            "images_per_s": len(self.splits.train_x) / max(train_time, 1e-9),
        }
        self.history.append(metrics)
        return metrics


def fit(cfg: TrainConfig, on_epoch_end: EpochCallback | None = None, *,
        resume_from: str | Path | None = None, splits: Splits | None = None,
        progress: ProgressFn | None = None) -> FitResult:
    """Train `cfg`; return the evaluated model, `cfg` and the history (see FitResult).

    on_epoch_end(metrics, save) runs after every epoch; `save(directory)` writes checkpoint.pt
    there. resume_from (a checkpoint.pt or its directory) continues after its epoch, exactly as an
    uninterrupted run would on the CPU. Raises Diverged after reporting a non-finite epoch.
    """
    set_threads(cfg.threads)
    device = pick_device(cfg)
    splits = splits if splits is not None else load_splits(cfg, device)
    trainer = _Trainer(cfg, splits, device)
    if resume_from is not None:
        trainer.restore(resume_from)
    while trainer.epoch < cfg.epochs:
        metrics = trainer.run_epoch(progress)
        if on_epoch_end is not None:
            on_epoch_end(dict(metrics), trainer.save)
        if not math.isfinite(metrics["train_loss"]):
            raise Diverged(trainer.epoch)
    return FitResult(trainer.eval_model, cfg, trainer.history)
