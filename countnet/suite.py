"""The shift suite: sets of PNG scenes at the edges of what a model was trained on.

Every set stays inside the training config's ranges (counts, sizes, contrast, background, noise,
blur), but sits at one edge of them, and all but the first are drawn by an independent program
(`countnet.pil_render`), so a model that learned countnet's generator rather than counting shows
it. Sets are written as PNG + labels.csv and read back through `countnet.folder`: the path that
real photos take, 8-bit rounding included.

SUITE_SETS, in order:
- test:     countnet's own in-distribution test split (its generator, its test seed);
- pil:      the PIL renderer, appearance drawn per image from the config's own ranges;
- bright:   the brightest trained objects on black, no noise, no blur, no ramp;
- dim:      contrast in [contrast_min, 1.5 * contrast_min], noise at a quarter of its range;
- inverted: dark objects on a light background in every image, mid contrast, modest noise;
- noisy:    noise std = noise_max, mid contrast;
- blur:     blur sigma = blur_max, mid contrast, modest noise;
- dense:    max_count objects in every image;
- sizes:    every side at a size limit (min_object_size or max_object_size);
- large:    the `pil` scenes LARGE_FACTOR times wider and higher (256 px for 64 px training
            scenes), with the same object sizes and objects per area (counts times
            LARGE_FACTOR**2), counted at native resolution (`countnet.counter`), never resized.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from countnet.bundle import load_model
from countnet.config import TrainConfig
from countnet.counter import Sizing
from countnet.datasets import split_seed
from countnet.errors import DataError
from countnet.evaluate import evaluate_loaded, summary
from countnet.folder import LABELS_CSV
from countnet.formatting import nan_to_null
from countnet.generate import write_dataset
from countnet.models import model_from_config
from countnet.pil_render import PilScene, write_pil_set

SUITE_SETS = ("test", "pil", "bright", "dim", "inverted", "noisy", "blur", "dense", "sizes",
              "large")
LARGE_FACTOR = 4  # the `large` set's side over the training side (256 px for 64 px scenes)
NATIVE_SETS = ("large",)  # sets counted at their own resolution, not resized to image_size
SUITE_N = 500  # images per set for `countnet evaluate --suite`
RECORD_N = 300  # images per set when train and export record the suite: a few seconds
SUITE_SEED = 0  # the PIL sets' seed; each set mixes in its index, so no two sets share images
MODEST_NOISE = 0.25  # "modest" noise: this share of the way from noise_min to noise_max
DIM_CONTRAST = 1.5  # dim objects: contrast at most this times contrast_min
# Sets whose per-count figures (`evaluate.score`'s by_count) the record keeps: the in-distribution
# test split, drawn by `countnet report` as the model's error by true count. The shifted sets'
# per-count figures stay with `countnet evaluate --suite --json`.
BY_COUNT_SETS = ("test",)
BY_COUNT_KEY = "by_count"


def pil_scenes_base(cfg: TrainConfig) -> PilScene:
    """The `pil` set: the PIL renderer with the config's own ranges.

    Args:
        cfg: the model's training config; its scene fields give the ranges.
    """
    return PilScene(
        image_size=cfg.image_size, channels=cfg.channels, min_count=cfg.min_count,
        max_count=cfg.max_count, min_object_size=cfg.min_object_size,
        max_object_size=cfg.max_object_size, min_gap=cfg.min_gap,
        background_min=cfg.background_min, background_max=cfg.background_max,
        contrast_min=cfg.contrast_min, contrast_max=cfg.contrast_max, jitter=cfg.jitter,
        gradient_max=cfg.gradient_max, invert_prob=cfg.invert_prob, noise_min=cfg.noise_min,
        noise_max=cfg.noise_max, blur_min=cfg.blur_min, blur_max=cfg.blur_max)


def pil_scenes(cfg: TrainConfig) -> dict[str, PilScene]:
    """The PIL-drawn sets (every set but `test`) for a model trained with `cfg`.

    Args:
        cfg: the model's training config; its scene fields give the ranges.
    """
    base = pil_scenes_base(cfg)
    mid = (cfg.contrast_min + cfg.contrast_max) / 2
    modest = cfg.noise_min + MODEST_NOISE * (cfg.noise_max - cfg.noise_min)
    # The brightest objects training drew: the top contrast, jittered up, on a 0 background.
    top = min(1.0, cfg.contrast_max * (1.0 + cfg.jitter))
    one = dataclasses.replace
    return {
        "pil": base,
        "bright": one(base, background_min=0.0, background_max=0.0, contrast_min=top,
                      contrast_max=top, jitter=0.0, gradient_max=0.0, invert_prob=0.0,
                      noise_min=0.0, noise_max=0.0, blur_min=0.0, blur_max=0.0),
        "dim": one(base, contrast_max=min(cfg.contrast_max, DIM_CONTRAST * cfg.contrast_min),
                   noise_min=modest, noise_max=modest),
        "inverted": one(base, invert_prob=1.0, contrast_min=mid, contrast_max=mid,
                        noise_min=modest, noise_max=modest),
        "noisy": one(base, noise_min=cfg.noise_max, contrast_min=mid, contrast_max=mid),
        "blur": one(base, blur_min=cfg.blur_max, contrast_min=mid, contrast_max=mid,
                    noise_min=modest, noise_max=modest),
        "dense": one(base, min_count=cfg.max_count),
        "sizes": one(base, sizes_at_limits=True),
        "large": large_scene(cfg, LARGE_FACTOR),
    }


def large_scene(cfg: TrainConfig, factor: int) -> PilScene:
    """The `pil` scenes `factor` times wider and higher, with the same object sizes and the same
    objects per area: counts from factor**2 * min_count to factor**2 * max_count.

    Args:
        cfg: the model's training config.
        factor: side of the large scenes over image_size (4: 256 px for 64 px scenes).
    """
    area = factor * factor
    return dataclasses.replace(
        pil_scenes_base(cfg), image_size=cfg.image_size * factor,
        min_count=cfg.min_count * area, max_count=cfg.max_count * area)


def applies(cfg: TrainConfig) -> bool:
    """Whether the suite measures a model trained with `cfg`: it draws rectangles from the
    config's scene fields, which say nothing about a model trained on photos (folder, carpk).

    Args:
        cfg: the model's training config.
    """
    return cfg.data == "synthetic"


def write_suite(out_dir: str | Path, cfg: TrainConfig, n_per_set: int = SUITE_N,
                seed: int = SUITE_SEED, log: Callable[[str], None] | None = None) -> Path:
    """Write every set of SUITE_SETS to out_dir/<set>/ (PNG files + labels.csv).

    Args:
        out_dir: the suite's folder (created if missing).
        cfg: the model's training config.
        n_per_set: images per set.
        seed: seed of the PIL sets (the `test` set always uses the config's test split).
        log: called with one line per set written (progress messages), if given.
    """
    out = Path(out_dir)
    scenes = pil_scenes(cfg)
    for index, name in enumerate(SUITE_SETS):
        if log:
            log(f"writing {name}: {n_per_set} images")
        if name == "test":
            write_dataset(out / name, cfg, n_per_set, split_seed(cfg.data_seed, "test"))
        else:
            write_pil_set(out / name, scenes[name], n_per_set, seed * len(SUITE_SETS) + index)
    return out


def score_suite(model: nn.Module | str | Path, suite_dir: str | Path,
                cfg: TrainConfig | None = None) -> dict[str, dict[str, Any]]:
    """Score every set of SUITE_SETS found in suite_dir; {set: `evaluate.score` figures}.

    Args:
        model: a bundle dir, run dir or checkpoint, or a loaded model (then pass cfg).
        suite_dir: a folder written by `write_suite`.
        cfg: the loaded model's config; ignored when `model` is a path.

    Raises:
        DataError: a set is missing or damaged.
    """
    net, cfg = _model_and_config(model, cfg)
    root = Path(suite_dir)
    missing = [s for s in SUITE_SETS if not (root / s / LABELS_CSV).is_file()]
    if missing:
        raise DataError(f"{root}: not a suite, no {', '.join(missing)} set(s) with a {LABELS_CSV}")
    return {name: evaluate_loaded(net, cfg, root / name,
                                  Sizing(native=True) if name in NATIVE_SETS else None)
            for name in SUITE_SETS}


def run_suite(model: nn.Module | Mapping[str, torch.Tensor] | str | Path,
              cfg: TrainConfig | None = None, n_per_set: int = SUITE_N, seed: int = SUITE_SEED,
              keep: str | Path | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Write the suite (to `keep`, or a temporary folder) and score it.

    Args:
        model: a bundle dir, run dir or checkpoint; or a loaded model or its state_dict
            (then pass cfg).
        cfg: the model's training config; read from the path when `model` is one.
        n_per_set: images per set.
        seed: seed of the PIL sets.
        keep: folder to write the suite into and keep; a temporary one when None.
        log: called with progress messages, if given.

    Returns:
        {set: `evaluate.score` figures}, in SUITE_SETS order.
    """
    net, cfg = _model_and_config(model, cfg)
    if keep is not None:
        write_suite(keep, cfg, n_per_set, seed, log)
        return score_suite(net, keep, cfg)
    with tempfile.TemporaryDirectory(prefix="countnet-suite-") as tmp:
        write_suite(tmp, cfg, n_per_set, seed, log)
        return score_suite(net, tmp, cfg)


def suite_record(results: dict[str, dict[str, Any]], n_per_set: int,
                 seed: int = SUITE_SEED) -> dict[str, Any]:
    """The figures a run dir (suite.json) or a bundle (metrics.json "suite") keeps.

    Args:
        results: `run_suite`'s output.
        n_per_set: images per set it used.
        seed: the PIL sets' seed it used.

    Returns:
        {"n_per_set", "seed", "sets": {set: summary figures}, "min_acc", "mean_acc",
         "hardest"}: min_acc and hardest let a search rank models by their worst set. The sets
        of BY_COUNT_SETS also keep their per-count figures (`by_count`).
    """
    sets = {name: summary(fig) for name, fig in results.items()}
    for name in BY_COUNT_SETS:
        if name in results:
            sets[name][BY_COUNT_KEY] = results[name][BY_COUNT_KEY]
    name = hardest(results)
    accs = [s["acc"] for s in sets.values()]
    return {"n_per_set": n_per_set, "seed": seed, "sets": sets, "min_acc": min(accs),
            "mean_acc": sum(accs) / len(accs), "hardest": name}


def record_suite(model: nn.Module | Mapping[str, torch.Tensor] | str | Path,
                 cfg: TrainConfig | None = None, n_per_set: int | None = None,
                 out_file: str | Path | None = None) -> dict[str, Any]:
    """Run the suite and return (and optionally write) its record (`suite_record`).

    What `countnet train` (RUN/suite.json) and `countnet export` (metrics.json "suite") call.

    Args:
        model: a bundle dir, run dir or checkpoint; or a loaded model or its state_dict
            (then pass cfg).
        cfg: the model's training config; read from the path when `model` is one.
        n_per_set: images per set; by default RECORD_N, or val_size when that is smaller (a
            smoke-sized run is not scored on more images than it validated on).
        out_file: where to write the record as JSON, if given.
    """
    net, cfg = _model_and_config(model, cfg)
    n = n_per_set if n_per_set is not None else min(RECORD_N, cfg.val_size)
    record = suite_record(run_suite(net, cfg, n), n)
    if out_file is not None:
        # JSON has no NaN (a set with no finite prediction): null, like the CLI's --json.
        Path(out_file).write_text(json.dumps(nan_to_null(record), indent=2) + "\n")
    return record


def hardest(results: dict[str, dict[str, Any]]) -> str:
    """The set with the lowest exact-count accuracy (ties: the higher MAE)."""
    return min(results, key=lambda s: (results[s]["acc"], -_or_inf(results[s]["mae"])))


def suite_table(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per set (set, n, acc, off_by_one, mae, bias), a header and the hardest set.

    Lines stay under 60 columns so that they fit after `countnet train`'s output.
    """
    lines = [f"{'set':<9} {'n':>5} {'acc':>6} {'off_by_one':>10} {'mae':>6} {'bias':>7}"]
    for name, fig in results.items():
        lines.append(f"{name:<9} {fig['n']:>5} {fig['acc']:>6.3f} {fig['off_by_one']:>10.3f} "
                     f"{fig['mae']:>6.3f} {fig['bias']:>+7.3f}")
    worst = hardest(results)
    lines.append(f"hardest set: {worst} (acc {results[worst]['acc']:.3f}, "
                 f"mae {results[worst]['mae']:.3f})")
    return lines


def _model_and_config(model: nn.Module | Mapping[str, torch.Tensor] | str | Path,
                      cfg: TrainConfig | None) -> tuple[nn.Module, TrainConfig]:
    if isinstance(model, (str, Path)):
        return load_model(model)
    if cfg is None:
        raise TypeError("cfg is required with a loaded model or a state_dict")
    if isinstance(model, nn.Module):
        return model.eval(), cfg
    net = model_from_config(cfg)  # weights come from the state_dict
    net.load_state_dict(model)
    return net.eval(), cfg


def _or_inf(v: float) -> float:
    return v if v == v else float("inf")  # NaN (no finite prediction) ranks as the worst MAE
