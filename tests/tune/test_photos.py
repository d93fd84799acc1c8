"""The shipped space for box-annotated photos, end to end on a CARPK-layout fixture: a real
Ray search (crops to train, whole photos at native resolution to judge), its export, and
`countnet evaluate` of the bundle on the photos at native resolution."""

from __future__ import annotations

import json
import math
from importlib.resources import files

import pytest
from PIL import Image

from countnet.bundle import CONFIG_FILE
from countnet.cli import main
from countnet.density_map import MIN_SIDE
from tests.countnet.photos import PHOTO_SIZE, write_carpk
from tune.cli import apply_overrides
from tune.overrides import set_fixed
from tune.space import load_space

N_TEST = 3  # validation photos


@pytest.fixture(scope="module")
def photo_search(ray_local, tmp_path_factory):
    """photos.yaml, shrunk to 2 trials x 2 epochs of 32 px crops, on a fixture of 160x96 photos."""
    from tune.search import run_search

    root = tmp_path_factory.mktemp("photos")
    carpk = write_carpk(root / "carpk", n_train=4, n_test=N_TEST)
    space = set_fixed(load_space(files("search_spaces") / "photos.yaml"), [
        f"data_dir={carpk}", "channels=1", "crop_size=32", "train_size=64",
        "train_eval_size=32", "eval_batch_size=2", "augment=none"])
    space = apply_overrides(space, num_samples=2, max_epochs=2)
    outcome = run_search(space, storage=str(root / "experiments"), name="photos", seed=0)
    return carpk, root, outcome


def test_photo_search_trains_on_crops_and_is_judged_on_whole_photos(photo_search, capsys) -> None:
    from tune.export import export_best

    carpk, root, outcome = photo_search
    assert outcome.finished and len(outcome.trials) == 2
    exported = export_best(outcome.exp_dir, root / "bundle")
    row = exported.metrics["metrics"]
    config = json.loads((root / "bundle" / CONFIG_FILE).read_text())
    assert config["train_config"]["crop_size"] == 32 and config["input"]["native"] is True
    assert config["object_size"]["unit"] == "px"  # from the training boxes
    # The bundle counts the CARPK test photos whole, at native resolution, by default: the
    # very figures its trial was judged by.
    assert main(["evaluate", str(root / "bundle"), str(carpk), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n"] == N_TEST
    assert figures["mae"] == pytest.approx(row["val_mae"], rel=1e-4)
    # `--scale 0.5` halves the photos first: another count, of 80x48 px images.
    assert main(["predict", str(root / "bundle"), str(carpk / "Images" / "test_000.png"),
                 "--scale", "0.5", "--density-map", str(root / "maps")]) == 0
    capsys.readouterr()
    with Image.open(root / "maps" / "test_000.density.png") as picture:
        width = picture.width
    half_width, half_height = PHOTO_SIZE[0] // 2, PHOTO_SIZE[1] // 2  # 80 x 48 px
    assert width == half_width * math.ceil(MIN_SIDE / half_height)  # enlarged by a whole factor
