"""Counting at native resolution: tiles equal one pass, --scale sizes, the pixel limit, memory."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from countnet.bundle import write_bundle
from countnet.cli import main
from countnet.folder import MAX_IMAGE_PIXELS, load_native
from countnet.models import model_from_config
from countnet.native import count_native, geometry
from countnet.pil_render import PilScene, write_pil_set
from tests.conftest import tiny_config
from tests.countnet.images import png_header

MEMORY_LIMIT = 2 << 30  # bytes: a 4096 x 4096 photo counts within 2 GB of RAM
BIG = 4096  # px


def _model(seed: int = 0, **values: object) -> tuple[torch.nn.Module, object]:
    """A tiny model with random weights (a density head gets non-zero weights too)."""
    cfg = tiny_config(**values)
    torch.manual_seed(seed)
    model = model_from_config(cfg).eval()
    if cfg.pool == "density":
        torch.nn.init.normal_(model.head.fc.weight, std=0.2)
    return model, cfg


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real PNG scene, 150 x 150 px, larger than any tile used below."""
    out = tmp_path_factory.mktemp("photo")
    write_pil_set(out, PilScene(image_size=150, min_count=40, max_count=60, noise_max=0.05), 1,
                  seed=3)
    return out / "image_000000.png"


SMALL_TILES = (8, 24, 64, 4096)  # px: many small tiles ... one tile


@pytest.mark.parametrize("values,tiles", [
    ({"pool": "density"}, SMALL_TILES), ({"pool": "sum"}, SMALL_TILES),
    ({"pool": "avg"}, SMALL_TILES),
    ({"pool": "density", "depth": 5, "batchnorm": True}, SMALL_TILES),
    # stride 8, reach > 150 px: every tile spans the image, only its core differs (seconds each)
    ({"pool": "density", "model": "resnet18", "channels": 3}, (64,)),
], ids=["density", "sum", "avg", "density-bn-depth5", "resnet18"])
def test_tiled_count_equals_one_pass_over_the_whole_image(photo, values, tiles) -> None:
    model, cfg = _model(**values)
    x = load_native(photo, cfg.channels)  # (C, 150, 150)
    geo = geometry(cfg)
    with torch.inference_mode():
        whole = model(x[None]).item()  # one pass, the image's own median
    for tile in tiles:
        tiled = count_native(model, geo, x, tile=tile).count
        assert tiled == pytest.approx(whole, rel=1e-5, abs=1e-5), tile


def test_a_tile_normalises_with_the_whole_images_median(photo) -> None:
    # The image's left half is brighter: a tile's own median would differ from the image's.
    model, cfg = _model(pool="density")
    x = load_native(photo, 1)
    x[:, :, :75] += 0.3
    with torch.inference_mode():
        whole = model(x[None]).item()
    assert count_native(model, geometry(cfg), x, tile=16).count == pytest.approx(whole, rel=1e-5)


def test_simple_geometry_is_the_layers_own() -> None:
    # depth 3: 3x3 convs, the second with stride 2: reach 1 + 1 + 2 px; stride 2.
    geo = geometry(tiny_config())
    assert (geo.stride, geo.radius) == (2, 4)
    assert geo.out_size(97, 130) == (49, 65)


def test_density_map_of_tiles_sums_to_the_count(photo) -> None:
    model, cfg = _model(pool="density")
    x = load_native(photo, 1)
    result = count_native(model, geometry(cfg), x, tile=20, with_density=True)
    assert result.density.shape == (75, 75)  # one position per 2 x 2 px
    assert float(result.density.double().sum()) == pytest.approx(result.count, rel=1e-6)


def test_scale_resizes_each_side_by_the_factor(tmp_path) -> None:
    Image.new("L", (90, 40), 128).save(tmp_path / "a.png")
    assert load_native(tmp_path / "a.png", 1).shape == (1, 40, 90)
    assert load_native(tmp_path / "a.png", 3, 0.5).shape == (3, 20, 45)
    assert load_native(tmp_path / "a.png", 1, 2.5).shape == (1, 100, 225)
    assert load_native(tmp_path / "a.png", 1, 0.001).shape == (1, 1, 1)  # at least 1 px


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    model, cfg = _model(pool="density", precision="fp32")  # compared with fp32 passes below
    return write_bundle(tmp_path_factory.mktemp("bundle") / "b", model.state_dict(), cfg, {})


def _counts(out: str) -> dict[str, float]:
    return {Path(r["filename"]).name: float(r["raw"]) for r in csv.DictReader(out.splitlines())}


def test_predict_native_and_scale_count_the_sizes_they_state(capsys, bundle, photo) -> None:
    model, _ = _model(pool="density", precision="fp32")  # the bundle's weights
    for flags, scale in ((["--native"], 1.0), (["--scale", "0.5"], 0.5),
                         (["--native", "--scale", "2"], 2.0)):
        assert main(["predict", str(bundle), str(photo), *flags]) == 0
        printed = _counts(capsys.readouterr().out)[photo.name]
        size = round(150 * scale)
        # The model's own count of the photo resized to the stated size, in one pass.
        x = Image.open(photo).convert("L")
        if scale != 1.0:
            x = x.resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255)[None, None]
        assert x.shape[2:] == (size, size)
        with torch.inference_mode():
            assert printed == pytest.approx(model(x).item(), abs=2e-4)  # 4 printed decimals
    # Without --native the photo is resized to image_size: another count.
    assert main(["predict", str(bundle), str(photo)]) == 0
    assert _counts(capsys.readouterr().out)[photo.name] != pytest.approx(printed, abs=1e-3)


@pytest.mark.parametrize("flags,size,reason", [
    (["--native"], (9000, 8000), f"9000x8000 px is over the limit of {MAX_IMAGE_PIXELS}"),
    (["--scale", "3"], (5000, 5000), "scaled by 3 is 15000x15000 px, over the limit"),
    (["--scale", "0"], (10, 10), "--scale: must be a number > 0"),
])
def test_an_image_over_the_pixel_limit_is_one_line_and_exit_2(capsys, bundle, tmp_path, flags,
                                                                size, reason) -> None:
    png_header(tmp_path / "big.png", *size)
    code = main(["predict", str(bundle), str(tmp_path / "big.png"), *flags])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("countnet predict: error: ")
    assert reason in err


def test_a_4096_px_photo_counts_within_2_gb(bundle, tmp_path) -> None:
    # A real photo-sized PNG (noise over a ramp), counted by the real command in its own process.
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 120, BIG, dtype=np.float32)[None, :]
    pixels = (ramp + rng.integers(0, 60, size=(BIG, BIG))).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "big.png")
    del pixels
    # The peak of this process alone: VmHWM belongs to the address space that exec made, where
    # ru_maxrss keeps the parent's peak across fork and exec (in a long pytest run, over 2 GB).
    code = ("import sys; from countnet.cli import main; "
            "code = main(sys.argv[1:]); "
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
            "print(hwm.split()[1], file=sys.stderr); "
            "sys.exit(code)")
    out = subprocess.run([sys.executable, "-c", code, "predict", str(bundle),
                          str(tmp_path / "big.png"), "--native"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak = int(out.stderr.strip().splitlines()[-1]) * 1024  # VmHWM: kB
    assert peak < MEMORY_LIMIT, f"peak RSS {peak / 2**30:.2f} GiB"
    assert float(out.stdout.splitlines()[1].split(",")[2]) > 0


@pytest.mark.parametrize("flags", [["--native"], ["--scale", "0.5"]], ids=["native", "scale"])
def test_evaluate_scores_what_predict_counts(capsys, bundle, tmp_path, flags) -> None:
    write_pil_set(tmp_path, PilScene(image_size=96, min_count=5, max_count=40), 4, seed=2)
    assert main(["predict", str(bundle), str(tmp_path), *flags]) == 0
    raw = _counts(capsys.readouterr().out)
    with (tmp_path / "labels.csv").open(newline="") as f:
        truth = {r["filename"]: float(r["count"]) for r in csv.DictReader(f)}
    assert main(["evaluate", str(bundle), str(tmp_path), "--json", *flags]) == 0
    figures = json.loads(capsys.readouterr().out)
    errors = [raw[name] - count for name, count in truth.items()]
    assert figures["n"] == 4
    assert figures["bias"] == pytest.approx(np.mean(errors), abs=1e-4)
    assert figures["mae"] == pytest.approx(np.mean(np.abs(errors)), abs=1e-4)
