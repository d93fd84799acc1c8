"""Bench: does a model trained on 64 px scenes count scenes of 256 and 1,024 px?

    python bench/large_scenes.py [--model RUN_OR_BUNDLE | --set key=value ...] [--tiny]
                                 [--n256 N] [--n1024 N] [--out-dir DIR]

The model: `--model` loads a run dir, bundle or checkpoint; otherwise the default TrainConfig
(with `--set` overrides) is trained here first, as `countnet train` would (its wall time is
recorded). The scenes: the shift suite's `large` scenes (`countnet.suite.large_scene`), drawn by
the independent Pillow renderer with the training config's object sizes and appearance, 4 and 16
times wider and higher than the training scenes (256 and 1,024 px for 64 px), with the same
objects per area (counts times 16 and 256: up to 320 and 5,120 objects). They are written as PNG
files and counted at native resolution through the path photos take (`countnet evaluate
--native`: tiles, whole-image normalisation).

Printed per size: images, mean count, mean relative error (mean over images of |pred - true| /
true, images with objects), bias (mean pred - true) in objects and as a share of the mean count,
MAE, and exact-count accuracy.

Goal (issue 21): mean relative error <= 1 % and |bias| <= 0.5 % of the count at both sizes.
`ratio` = the largest of (relative error / 1 %) and (|relative bias| / 0.5 %) over both sizes:
<= 1 exactly when the goal is met.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: off
from countnet.runtime import omp_env

# Before torch loads (OpenMP reads it once), as the `countnet` command does: countnet.runtime.
os.environ.update(omp_env())
# isort: on
import numpy as np

from countnet.bundle import load_model
from countnet.config import TrainConfig
from countnet.counter import Sizing
from countnet.evaluate import predict_rows
from countnet.folder import LABELS_CSV, read_labels_csv
from countnet.pil_render import write_pil_set
from countnet.rundir import RunLogger
from countnet.suite import large_scene
from countnet.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`, when imported
from report import headline, machine, write_result

NAME = "large_scenes"
FACTORS = (4, 16)  # scene side over the training side: 256 and 1,024 px for 64 px scenes
MAX_REL_ERROR = 0.01  # mean relative error
MAX_REL_BIAS = 0.005  # |bias| as a share of the mean count
SEED = 21  # the scenes' seed (the issue's number); each size mixes in its factor
N_DEFAULT = {4: 200, 16: 20}  # images per size
N_TINY = {4: 4, 16: 1}
TINY_TRAIN = {"width": 8, "depth": 3, "train_size": 256, "val_size": 64, "test_size": 64,
              "train_eval_size": 64, "epochs": 1}
GOAL = ("a model trained on 64 px scenes counts 256 px and 1,024 px scenes (same object sizes "
        "and objects per area) with mean relative error <= 1 % and |bias| <= 0.5 % of the "
        "count; ratio = max(rel error / 1 %, |rel bias| / 0.5 %) over both sizes (<= 1 when met)")


def figures(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Relative error, bias and friends of raw predictions pred (N,) against counts y (N,)."""
    has = y > 0
    bias = float(np.mean(pred - y))
    mean_count = float(np.mean(y))
    return {"n": len(y), "mean_count": mean_count, "min_count": float(y.min()),
            "max_count": float(y.max()),
            "rel_error": float(np.mean(np.abs(pred[has] - y[has]) / y[has])),
            "bias": bias, "rel_bias": bias / mean_count if mean_count else float("nan"),
            "mae": float(np.mean(np.abs(pred - y))),
            "acc": float(np.mean(np.maximum(0, np.round(pred)) == y))}


def measure(model: Any, cfg: TrainConfig, factor: int, n: int, tmp: Path) -> dict[str, Any]:
    """Draw n scenes `factor` times the training side, count them natively; their figures."""
    folder = tmp / f"x{factor}"
    t0 = time.perf_counter()
    write_pil_set(folder, large_scene(cfg, factor), n, SEED * 100 + factor)
    drawn = time.perf_counter() - t0
    rows = read_labels_csv(folder / LABELS_CSV)
    t0 = time.perf_counter()
    pred = predict_rows(model, cfg, folder, rows, sizing=Sizing(native=True)).double().numpy()
    counted = time.perf_counter() - t0
    y = np.array([r.count for r in rows])
    return {"side_px": cfg.image_size * factor, **figures(pred, y), "draw_s": drawn,
            "count_s": counted}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="run dir, bundle or checkpoint (default: train "
                   "the default config here)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig field of the model to train (repeatable)")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--n256", type=int, help="images of 4x the training side (default 200)")
    p.add_argument("--n1024", type=int, help="images of 16x the training side (default 20)")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    if args.model is not None and args.overrides:
        print("bench/large_scenes.py: --set is for the model trained here, not with --model",
              file=sys.stderr)
        return 2
    sizes = dict(N_TINY if args.tiny else N_DEFAULT)
    for factor, n in ((4, args.n256), (16, args.n1024)):
        if n is not None:
            sizes[factor] = n
    info = machine()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {info.get('load_avg_1m')}; "
          f"torch {info['torch']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="countnet-large-") as tmp:
        train_s = None
        model_path = args.model
        if model_path is None:
            tiny = [f"{k}={v}" for k, v in TINY_TRAIN.items()] if args.tiny else []
            cfg = TrainConfig.from_yaml("", [*tiny, *args.overrides])  # --set after --tiny
            print(f"training {cfg.model} (pool {cfg.pool}, width {cfg.width}, depth "
                  f"{cfg.depth}) on {cfg.train_size} scenes of {cfg.image_size} px, "
                  f"{cfg.epochs} epochs", flush=True)
            model_path = Path(tmp) / "run"
            t0 = time.perf_counter()
            with RunLogger(model_path, cfg) as logger:
                fit(cfg, logger)
            train_s = time.perf_counter() - t0
        model, cfg = load_model(model_path)
        results = {factor: measure(model, cfg, factor, n, Path(tmp))
                   for factor, n in sizes.items()}
    print(f"model: {args.model or 'trained here'} ({cfg.model}, pool {cfg.pool}, trained on "
          f"{cfg.image_size} px scenes of {cfg.min_count}-{cfg.max_count} objects)")
    print(f"{'side':>6} {'n':>5} {'mean':>8} {'rel err':>8} {'bias':>8} {'rel bias':>9} "
          f"{'mae':>7} {'acc':>6}")
    for r in results.values():
        print(f"{r['side_px']:>6} {r['n']:>5} {r['mean_count']:>8.1f} {r['rel_error']:>8.2%} "
              f"{r['bias']:>+8.2f} {r['rel_bias']:>+9.2%} {r['mae']:>7.2f} {r['acc']:>6.3f}")
    ratio = max(max(r["rel_error"] / MAX_REL_ERROR, abs(r["rel_bias"]) / MAX_REL_BIAS)
                for r in results.values())
    met = ratio <= 1.0
    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "model": str(args.model) if args.model else "trained here", "train_s": train_s,
        "config": cfg.to_dict(), "sizes": {str(r["side_px"]): r for r in results.values()}},
        quick=args.tiny, out_dir=Path(args.out_dir) if args.out_dir else None)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
