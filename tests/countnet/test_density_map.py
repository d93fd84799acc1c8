"""`countnet predict --density-map DIR` with a real (tiny) trained density model on real PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from countnet.bundle import load_model
from countnet.cli import main
from countnet.counter import Counter, Sizing
from countnet.density_map import MIN_SIDE, SUFFIX
from countnet.pil_render import PilScene, write_pil_set
from countnet.rundir import RunLogger
from countnet.train import fit


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny) -> dict[str, Path]:
    """Run dirs of tiny models trained 2 epochs: one with a density head, one with sum pooling."""
    root = tmp_path_factory.mktemp("runs")
    for pool in ("density", "sum"):
        cfg = tiny(pool=pool, epochs=2, batch_size=32, precision="fp32")
        with RunLogger(root / pool, cfg) as logger:
            fit(cfg, logger)
    return {pool: root / pool for pool in ("density", "sum")}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """Two 64 px scenes and one 150 px scene, as PNG files."""
    out = tmp_path_factory.mktemp("scenes")
    write_pil_set(out, PilScene(min_count=3, max_count=12), 2, seed=8)
    write_pil_set(out / "big", PilScene(image_size=150, min_count=30, max_count=60), 1, seed=9)
    (out / "big" / "image_000000.png").rename(out / "big.png")
    return out


def _printed(out: str) -> dict[str, float]:
    return {Path(r["filename"]).name: float(r["raw"]) for r in csv.DictReader(out.splitlines())}


@pytest.mark.parametrize("native", [False, True], ids=["resized", "native"])
def test_density_map_decodes_is_not_blank_and_sums_to_the_printed_count(
        capsys, runs, scenes, tmp_path, native) -> None:
    images = [scenes / "image_000000.png", scenes / "image_000001.png", scenes / "big.png"]
    flags = ["--native"] if native else []
    code = main(["predict", str(runs["density"]), *map(str, images), *flags,
                 "--density-map", str(tmp_path / "maps")])
    assert code == 0
    printed = _printed(capsys.readouterr().out)
    model, cfg = load_model(runs["density"])
    counter = Counter(model, cfg, torch.device("cpu"), Sizing(native=native))
    for image in images:
        png = tmp_path / "maps" / f"{image.stem}{SUFFIX}"
        with Image.open(png) as picture:
            picture.load()  # decodes
            pixels = np.asarray(picture.convert("RGB"), dtype=np.int16)  # (H', W', 3)
            text = dict(picture.text)
        side = 150 if native and image.name == "big.png" else cfg.image_size
        factor = -(-MIN_SIDE // side)  # enlarged to at least MIN_SIDE px
        assert pixels.shape[1] == side * factor and pixels.shape[0] > side * factor
        assert pixels.std() > 10  # not blank
        heat = (pixels[..., 0] - pixels[..., 2]) > 60  # red to yellow over the grey photo
        assert heat.any() and not heat[:10].any()  # the density; the black strip of the count
        # The density's sum is the printed count: as recorded in the PNG, and recomputed.
        raw = printed[image.name]
        assert float(text["density_sum"]) == pytest.approx(raw, abs=1e-4)
        assert float(text["count"]) == pytest.approx(raw, abs=1e-4)
        density = counter.count(counter.load(image), with_density=True).density
        assert float(density.double().sum()) == pytest.approx(raw, abs=1e-3)
        assert density.shape == (side // 2, side // 2)  # one position per 2 x 2 px


def test_a_model_without_a_density_head_is_one_line_and_exit_2(capsys, runs, scenes,
                                                               tmp_path) -> None:
    code = main(["predict", str(runs["sum"]), str(scenes), "--density-map",
                 str(tmp_path / "maps")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "has pool 'sum', no density head" in err
    assert not (tmp_path / "maps").exists()


def test_two_images_that_would_share_a_map_are_refused(capsys, runs, scenes, tmp_path) -> None:
    (tmp_path / "a").mkdir()
    same = tmp_path / "a" / "big.png"
    same.write_bytes((scenes / "big.png").read_bytes())
    code = main(["predict", str(runs["density"]), str(scenes / "big.png"), str(same),
                 "--density-map", str(tmp_path / "maps")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "would both write big.density.png" in err
