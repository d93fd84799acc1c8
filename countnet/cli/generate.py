"""`countnet generate`: write synthetic scenes as PNG files + labels.csv."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from countnet.config import ConfigError, TrainConfig
from countnet.folder import read_labels_csv
from countnet.generate import write_dataset
from countnet.scenes import SceneSpec

SMOKE_N = 8


def register(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("generate", help="write synthetic scenes (PNG + labels.csv)",
                       description="Write N synthetic scenes as PNG files and labels.csv "
                       "(filename,count). Scene i of seed S is always the same image.")
    p.add_argument("--out", type=Path, help="output directory (required unless --smoke-test)")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--image-size", type=int, default=d.image_size, help="px (default %(default)s)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=d.channels)
    p.add_argument("--min-count", type=int, default=d.min_count)
    p.add_argument("--max-count", type=int, default=d.max_count)
    p.add_argument("--min-object-size", type=int, default=d.min_object_size, help="px")
    p.add_argument("--max-object-size", type=int, default=d.max_object_size, help="px")
    p.add_argument("--distractors", type=int, default=d.distractors,
                   help="max hollow frames per image, not counted")
    p.add_argument("--noise", type=float, default=d.noise, help="pixel noise std, in [0, 1] units")
    p.add_argument("--jitter", type=float, default=d.jitter, help="relative intensity jitter")
    p.add_argument("--smoke-test", action="store_true",
                   help=f"write {SMOKE_N} images to a temporary directory and read them back")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # TrainConfig checks the scene values (ranges, channels) with its usual messages.
    cfg = TrainConfig.from_dict({
        "image_size": args.image_size, "channels": args.channels, "min_count": args.min_count,
        "max_count": args.max_count, "min_object_size": args.min_object_size,
        "max_object_size": args.max_object_size, "distractors": args.distractors,
        "noise": args.noise, "jitter": args.jitter})
    spec = SceneSpec.from_config(cfg)
    try:
        spec.check()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.n < 1:
        raise ConfigError(f"--n: must be >= 1, got {args.n}")
    if args.smoke_test:
        with tempfile.TemporaryDirectory() as tmp:
            labels = write_dataset(tmp, spec, SMOKE_N, args.seed)
            rows = read_labels_csv(labels)
            print(f"smoke test: wrote and read back {len(rows)} scenes: "
                  + " ".join(f"{r.name}={int(r.count)}" for r in rows))
        return 0
    if args.out is None:
        raise ConfigError("--out is required")
    labels = write_dataset(args.out, spec, args.n, args.seed)
    print(f"wrote {args.n} scenes and {labels}")
    return 0

