"""`countnet predict`: count objects in images; prints `filename,count,raw` CSV lines."""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from countnet.cli import check_device
from countnet.config import DEVICES, ConfigError, TrainConfig
from countnet.folder import MAX_IMAGE_PIXELS
from countnet.generate import write_dataset
from countnet.predict import count_images
from countnet.rundir import RunLogger
from countnet.train import fit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="count objects in images with a bundle or run",
                       description="Print one CSV line per image: filename,count,raw "
                       "(count = the rounded prediction, raw = the regression output).")
    p.add_argument("model", nargs="?", type=Path, metavar="RUN_OR_BUNDLE",
                   help="exported bundle dir, run dir, or checkpoint")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGES_OR_DIRS")
    p.add_argument("--device", choices=DEVICES,
                   help="auto, cpu or cuda (default: the model's own, or the CPU for a model "
                   "trained on CUDA when this machine has none)")
    add_sizing_flags(p)
    p.add_argument("--density-map", type=Path, metavar="DIR",
                   help="also write DIR/<image>.density.png for each image: the model's "
                   "per-position density over the image (heat colours) and the count in the "
                   "top-left corner. Needs a model trained with pool: density")
    p.add_argument("--smoke-test", action="store_true",
                   help="generate 16 scenes, train a tiny model 2 epochs, predict them")
    p.set_defaults(func=run)


SCALE_HELP = (
    "resize each image by the factor S first, then count it at that size (implies --native). "
    "How to choose S: a model counts objects of the size it was trained on, which its bundle's "
    "config.json records as \"object_size\" (min and max side in px; the default synthetic "
    "scenes have 3-8 px objects). Measure your objects in px and take S = (trained size) / "
    "(size in your photo): e.g. cars about 40 px long and a model trained on 3-8 px objects: "
    "S = 6 / 40 = 0.15. S > 1 enlarges")


def add_sizing_flags(p: argparse.ArgumentParser) -> None:
    """--native and --scale, shared by predict and evaluate."""
    p.add_argument("--native", action="store_true",
                   help="count each image at its own resolution (in tiles whose overlap covers "
                   "the receptive field, so the count equals one pass over the whole image), "
                   "instead of resizing it to the model's image_size. A model trained on crops "
                   "(crop_size > 0) always counts this way. An image over the pixel limit "
                   f"({MAX_IMAGE_PIXELS} px) is refused")
    p.add_argument("--scale", type=float, metavar="S", help=SCALE_HELP)


def run(args: argparse.Namespace) -> int:
    if args.smoke_test:
        return smoke_test()
    if args.model is None or not args.images:
        raise ConfigError("usage: countnet predict RUN_OR_BUNDLE IMAGES_OR_DIRS...")
    if args.device is not None:
        check_device(args.device, f"--device {args.device}")
    print_counts(args.model, args.images, args.device, native=args.native, scale=args.scale,
                 density_dir=args.density_map)
    return 0


def format_count(raw: float) -> str:
    """The rounded, non-negative count; `nan` when the model gave NaN or inf (no count)."""
    return str(max(0, round(raw))) if math.isfinite(raw) else "nan"


def print_counts(model: Path, images: list[Path], device: str | None = None,
                 names_only: bool = False, *, native: bool = False, scale: float | None = None,
                 density_dir: Path | None = None) -> None:
    """The CSV on stdout. A NaN/inf prediction prints `nan` and one warning line at the end.

    `names_only` prints file names without their folder (for images in a deleted temporary one);
    native, scale and density_dir are `count_images`'s.
    """
    # A bad model, path, scale or density request fails before any output.
    results = count_images(model, images, device, native=native, scale=scale,
                           density_dir=density_dir)
    print("filename,count,raw")
    bad = 0
    for path, raw in results:
        bad += not math.isfinite(raw)
        print(f"{path.name if names_only else path},{format_count(raw)},{raw:.4f}", flush=True)
    if bad:
        print(f"countnet predict: warning: {bad} prediction(s) were not finite (count printed "
              f"as nan): the model's weights or the input are broken", file=sys.stderr)


def smoke_test() -> int:
    from countnet.cli.train import SMOKE_OVERRIDES

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "images", TrainConfig(), 16, seed=123)
        cfg = TrainConfig.from_dict(SMOKE_OVERRIDES)
        with RunLogger(Path(tmp) / "run", cfg) as logger:
            fit(cfg, logger)
        print("smoke test: 16 generated scenes and a tiny model, in a temporary folder that is "
              "deleted at the end", file=sys.stderr)
        print_counts(Path(tmp) / "run", [Path(tmp) / "images"], names_only=True)
    return 0
