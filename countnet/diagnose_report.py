"""`countnet diagnose` in words: the one-line verdict, the plain-text report and the `--json`
dict of a Diagnosis, and the short verdict at the end of `countnet train`.

The measurements are `countnet.diagnose`'s; this module words them. It imports that module, which
never imports this one: imports run one way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from countnet.config import TrainConfig
from countnet.datasets import Splits
from countnet.diagnose import DEFAULT_SAMPLES, TERMS, Diagnosis, diagnose

TOP_CAUSES = 3  # at most this many mechanisms named in the verdict
CAUSE_SHARE = 0.8  # name mechanisms until they cover this share of the positive contributions

_CAUSE_WORDS = {
    "lag": "the epoch-average lag (the printed loss averages batches while the weights moved)",
    "averaging": "weight averaging (the printed loss is the trained weights', the val loss the "
                 "averaged weights')",
    "precision": "bf16 rounding of the training forward pass (evaluation is measured in fp32)",
    "dropout": "dropout (active only in training)",
    "batchnorm": "BatchNorm batch statistics (training uses per-batch statistics)",
    "augmentation": "the augmentation (it makes the training images harder)",
    "interaction": "the interaction of these train-mode effects",
    "minus_true_gap": "a validation set that scores better than the training samples",
}


def _fmt(v: float | None, sign: bool = False, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _digits(values: Sequence[float | None]) -> int:
    """Decimals that show at least 3 significant digits of the largest value (4..8)."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 4
    return int(min(8, max(4, 2 - math.floor(math.log10(max(finite))))))


def verdict_line(diag: Diagnosis) -> str:
    """One sentence: why the printed train loss is where it is, and the true gap with its CI."""
    gap = (f"the true generalisation gap (val - train, both in eval mode) is "
           f"{diag.true_gap:+.4g} (95 % CI {diag.true_gap_ci95[0]:+.4g} .. "
           f"{diag.true_gap_ci95[1]:+.4g})")
    m = diag.measurements
    f, a = m["f_printed_train_loss"], m["a_val_loss"]
    if diag.attribution is None or f is None:
        return f"the printed train loss is not recorded; {gap}"
    if not (math.isfinite(f) and math.isfinite(a)):
        return f"the losses are not finite (train {f}, val {a}); {gap}"
    if f <= a:
        return f"the printed train loss {f:.4g} is not above the val loss {a:.4g}; {gap}"
    positive = sorted(((v, k) for k, v in diag.attribution.items() if v > 0), reverse=True)
    total = sum(v for v, _ in positive)
    causes, covered = [], 0.0
    for v, k in positive[:TOP_CAUSES]:
        causes.append(f"{_CAUSE_WORDS[k]} {v:+.4g}")
        covered += v
        if covered >= CAUSE_SHARE * total:
            break
    return (f"the printed train loss {f:.4g} is above the val loss {a:.4g} "
            f"(by {f - a:+.4g}) because of {'; '.join(causes)}; {gap}")


def format_report(diag: Diagnosis) -> str:
    """The plain-text report of `countnet diagnose`: measurements, attribution, split checks,
    notes and verdict.

    Args:
        diag: the diagnosis.
    """
    m = diag.measurements
    vals = [v for v in m.values()] + list((diag.attribution or {}).values())
    k = _digits(vals)
    lines = [f"countnet diagnose {diag.source}".rstrip(),
             f"weights of epoch {diag.epoch}; {diag.samples} fixed training samples in batches "
             f"of {diag.batch_size}; {diag.split['val_size']} validation samples", "",
             "measurements (loss of the run, same weights):"]
    rows = [
        ("(a)", "val, eval mode", m["a_val_loss"]),
        ("(b)", "train, eval mode, no augmentation", m["b_train_eval"]),
        ("(c)", "train, eval mode, with the run's augmentation", m["c_train_augmented"]),
        ("(d)", "train, only Dropout in train mode", m["d_train_dropout"]),
        ("(e)", "train, only BatchNorm in train mode", m["e_train_batchnorm"]),
        ("(t)", f"train, the run's full training mode, {diag.precision}", m["t_train_mode"]),
        ("(u)", "train, the run's full training mode, fp32", m["u_train_mode_fp32"]),
        ("(r)", "(t) with the trained, not averaged, weights", m["r_train_mode_trained_weights"]),
        ("(f)", "printed train loss (epoch mean of batch losses)", m["f_printed_train_loss"]),
        ("(g)", "weight-decay penalty (not in the printed loss)", m["g_weight_decay_penalty"]),
    ]
    lines += [f"  {tag} {label:<50} {_fmt(v, digits=k):>12}" for tag, label, v in rows]
    absent = [n for n, present in diag.mechanisms.items() if not present]
    if absent:
        lines.append(f"  not in this run's training mode (term exactly 0): {', '.join(absent)}")
    lines.append("")
    if diag.attribution is None:
        lines.append("attribution: no printed train loss recorded (no history)")
    else:
        d = diag.printed_difference
        lines.append("attribution of the printed difference (train - val):")
        lines.append(f"  {'term':<36} {'formula':<20} {'value':>12} {'share':>8}")
        for key, label, formula in TERMS:
            v = diag.attribution[key]
            share = f"{100 * v / d:7.1f}%" if d and math.isfinite(d) and d != 0 else "      -"
            lines.append(f"  {label:<36} {formula:<20} {_fmt(v, True, k):>12} {share:>8}")
        lines.append(f"  {'= printed train - val':<36} {'f - a':<20} {_fmt(d, True, k):>12}")
        lines.append(f"  {'weight-decay penalty (shown only)':<36} {'(g)':<20} "
                     f"{_fmt(m['g_weight_decay_penalty'], True, k):>12}")
    s = diag.split
    lines += ["", "the split (h):",
              f"  val loss 95 % bootstrap CI: {_fmt(diag.val_loss_ci95[0], digits=k)} .. "
              f"{_fmt(diag.val_loss_ci95[1], digits=k)}",
              f"  true gap a - b: {_fmt(diag.true_gap, True, k)} (95 % CI "
              f"{_fmt(diag.true_gap_ci95[0], True, k)} .. {_fmt(diag.true_gap_ci95[1], True, k)})",
              f"  counts: train mean {s['train_count_mean']:.2f} var {s['train_count_var']:.2f}; "
              f"val mean {s['val_count_mean']:.2f} var {s['val_count_var']:.2f}",
              f"  train count histogram: {s['train_count_hist']}",
              f"  val count histogram:   {s['val_count_hist']}",
              f"  val images that are exact duplicates of training images: "
              f"{s['val_duplicates_of_train']} of {s['val_size']}"]
    lines += [f"note: {n}" for n in diag.notes]
    lines += ["", f"verdict: {verdict_line(diag)}"]
    return "\n".join(lines)


def diagnosis_json(diag: Diagnosis) -> dict[str, Any]:
    """`countnet diagnose --json`: every measurement (`Diagnosis.to_dict`) and the verdict.

    Args:
        diag: the diagnosis.
    """
    return {**diag.to_dict(), "verdict": verdict_line(diag)}


def short_verdict(history: Sequence[dict[str, Any]], model: nn.Module | None = None,
                  cfg: TrainConfig | None = None, splits: Splits | None = None, *,
                  samples: int = DEFAULT_SAMPLES) -> str | None:
    """One line for the end of `countnet train`, or None when train_loss <= val_loss.

    From the history alone (cheap): splits the printed difference into train-mode effects
    (f - train_loss_eval) and the true gap (val_loss - train_loss_eval). With model, cfg and
    splits it runs the full `diagnose` and returns its verdict instead.

    Args:
        history: the run's per-epoch metrics; the last epoch is judged.
        model, cfg, splits: the trained model, its config and data, for the full diagnosis.
        samples: training samples the full diagnosis measures.
    """
    if not history:
        return None
    last = history[-1]
    f, a = last.get("train_loss"), last.get("val_loss")
    if f is None or a is None or not (math.isfinite(f) and math.isfinite(a)) or f <= a:
        return None
    if model is not None and cfg is not None and splits is not None:
        return verdict_line(diagnose(model, cfg, splits, history, samples=samples))
    b = last.get("train_loss_eval")
    if b is None or not math.isfinite(b):
        return (f"train_loss {f:.4g} > val_loss {a:.4g}: run `countnet diagnose RUN` to see why")
    return (f"train_loss {f:.4g} > val_loss {a:.4g}: in eval mode the training loss is {b:.4g}, "
            f"so train-mode effects (epoch-average lag, weight averaging, dropout, BatchNorm, "
            f"augmentation) add "
            f"{f - b:+.4g} and the true generalisation gap is {a - b:+.4g}; "
            f"`countnet diagnose RUN` splits it term by term")
