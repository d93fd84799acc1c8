"""`countnet generate`: write synthetic scenes as PNG files + labels.csv."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from countnet.config import ConfigError, TrainConfig, field_type, scene_fields
from countnet.folder import LABELS_CSV, read_labels_csv
from countnet.generate import write_dataset
from countnet.outdir import OutputKind, check_out_dir, staged_dir

SMOKE_N = 8
SCENE_NAME = re.compile(r"scene_\d+\.png")  # the files countnet.generate.write_dataset names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write synthetic scenes (PNG + labels.csv)",
                       description="Write N synthetic scenes as PNG files and labels.csv "
                       "(filename,count). Scene i of seed S is always the same image. Every "
                       "scene field of TrainConfig is a flag (see `countnet train` configs).")
    p.add_argument("--out", type=Path, help="output directory (required unless --smoke-test)")
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    # One flag per scene field, derived from TrainConfig: no second list of names or defaults.
    d = TrainConfig()
    for name in ("image_size", "channels", *scene_fields()):
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, dest=name, type=_flag_type(name), default=getattr(d, name),
                       metavar=name.split("_")[-1].upper(), help="default %(default)s")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out dataset written by generate (never merged)")
    p.add_argument("--smoke-test", action="store_true",
                   help=f"write {SMOKE_N} images to a temporary directory and read them back")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # TrainConfig checks the scene values (ranges, fit, finite numbers) with its usual messages.
    cfg = TrainConfig.from_dict({name: getattr(args, name)
                                 for name in ("image_size", "channels", *scene_fields())})
    if args.n < 1:
        raise ConfigError(f"--n: must be >= 1, got {args.n}")
    if args.smoke_test:
        with tempfile.TemporaryDirectory() as tmp:
            labels = write_dataset(tmp, cfg, SMOKE_N, args.seed)
            rows = read_labels_csv(labels)
            print(f"smoke test: wrote and read back {len(rows)} scenes: "
                  + " ".join(f"{r.name}={int(r.count)}" for r in rows))
        return 0
    if args.out is None:
        raise ConfigError("--out is required")
    check_out_dir(args.out, force=args.force, kind=DATASET_OUTPUT)
    # Written next to --out and renamed into place: never 3 new rows beside 8 old images, and
    # an interrupted run leaves the old folder (or none) behind, not half a dataset.
    with staged_dir(args.out) as stage:
        write_dataset(stage, cfg, args.n, args.seed)
    print(f"wrote {args.n} scenes and {args.out / LABELS_CSV}")
    return 0


def is_generated(path: Path) -> bool:
    """A folder `countnet generate` wrote: labels.csv and scene_*.png, nothing else.

    A folder of real photos has a labels.csv too: --force must never delete one.
    """
    names = [p.name for p in path.iterdir()]
    return LABELS_CSV in names and all(
        n == LABELS_CSV or SCENE_NAME.fullmatch(n) for n in names)


DATASET_OUTPUT = OutputKind("generated dataset", is_generated,
                            f"it holds files other than {LABELS_CSV} and scene_*.png")



def _flag_type(name: str) -> type | object:
    """The argparse type of a TrainConfig field; bools take true/false."""
    typ = field_type(name)
    if typ is bool:
        return lambda v: {"true": True, "false": False}.get(v.lower(), v)
    return typ
