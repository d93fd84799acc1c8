"""`countnet predict`: count objects in images; prints `filename,count,raw` CSV lines."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from countnet.config import ConfigError, TrainConfig
from countnet.generate import write_dataset
from countnet.predict import count_images
from countnet.rundir import RunLogger
from countnet.scenes import SceneSpec
from countnet.train import fit


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="count objects in images with a bundle or run",
                       description="Print one CSV line per image: filename,count,raw "
                       "(count = the rounded prediction, raw = the regression output).")
    p.add_argument("model", nargs="?", type=Path, metavar="RUN_OR_BUNDLE",
                   help="exported bundle dir, run dir, or checkpoint")
    p.add_argument("images", nargs="*", type=Path, metavar="IMAGES_OR_DIRS")
    p.add_argument("--smoke-test", action="store_true",
                   help="generate 16 scenes, train a tiny model 2 epochs, predict them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.smoke_test:
        return smoke_test()
    if args.model is None or not args.images:
        raise ConfigError("usage: countnet predict RUN_OR_BUNDLE IMAGES_OR_DIRS...")
    print_counts(args.model, args.images)
    return 0


def print_counts(model: Path, images: list[Path]) -> None:
    print("filename,count,raw")
    for path, raw in count_images(model, images):
        print(f"{path},{max(0, round(raw))},{raw:.4f}", flush=True)


def smoke_test() -> int:
    from countnet.cli.train import SMOKE_OVERRIDES

    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "images", SceneSpec(), 16, seed=123)
        cfg = TrainConfig.from_dict(SMOKE_OVERRIDES)
        logger = RunLogger(Path(tmp) / "run", cfg)
        fit(cfg, logger)
        logger.close()
        print_counts(Path(tmp) / "run", [Path(tmp) / "images"])
    return 0
