"""Every bench script runs end to end at a tiny size and writes its result JSON.

No figure is checked (speed and accuracy figures live in the scripts' own output, never in tests):
only that each script works with the real parts (real training and shift suites, real `countnet
train` processes) and that its JSON has the top-level `ratio`, `goal`, `goal_met` and `machine`.
One exception is a correctness bound, not a figure: data.py's PIL side must draw the generator's
scenes to within 1e-4. The scripts that run Ray are in test_bench_ray.py.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from countnet.boxes import folder_photos
from countnet.folder import load_rows, read_labels_csv
from countnet.suite import SUITE_SETS
from tests.bench.scripts import BENCH, check_result, load_script, run_tiny


def test_data_tiny(tmp_path) -> None:
    result = run_tiny("data", tmp_path)
    # PIL drew the very same scenes: at the defaults (blur included) and in every variant.
    assert result["max_abs_diff"] < 1e-4
    assert set(result["max_abs_diff_by_check"]) == {"defaults", "no_blur", "distractors", "rgb"}
    assert all(d < 1e-4 for d in result["max_abs_diff_by_check"].values())


def test_precision_tiny(tmp_path) -> None:
    result = run_tiny("precision", tmp_path)
    modes = {"fp32", "fp32+channels_last", "bf16", "bf16+channels_last"}
    assert set(result["train_images_per_s"]) == modes == set(result["eval_images_per_s"])
    assert result["auto_resolves_to"] in ("fp32", "bf16")


def test_loop_tiny(tmp_path) -> None:
    result = run_tiny("loop", tmp_path)
    assert [row["epoch"] for row in result["epochs"]] == [1, 2]
    assert math.isfinite(result["eval_share"])


def test_default_seeds_tiny(tmp_path) -> None:
    result = run_tiny("default_seeds", tmp_path)
    assert [run["seed"] for run in result["runs"]] == [0, 1, 2]
    suite_sets = set(SUITE_SETS)
    for run in result["runs"]:
        assert set(run["suite"]) == suite_sets
        assert run["test_split"]["n"] == 64 and run["suite"]["pil"]["n"] == 20
    assert result["hardest_set"] in suite_sets


def test_large_scenes_tiny(tmp_path) -> None:
    result = run_tiny("large_scenes", tmp_path, "--set", "pool=density")
    assert set(result["sizes"]) == {"256", "1024"}  # 4x and 16x the 64 px training scenes
    assert result["sizes"]["256"]["n"] == 4 and result["sizes"]["1024"]["n"] == 1
    assert result["config"]["pool"] == "density"


def test_memorise_tiny(tmp_path) -> None:
    result = run_tiny("memorise", tmp_path)
    run = result["runs"][0]
    assert run["share"] == pytest.approx(run["train_loss_eval"] / run["baseline_mse"])


def test_rank_fidelity_tiny(tmp_path) -> None:
    result = run_tiny("rank_fidelity", tmp_path, "--recipes", "new", "--seeds", "0")
    configs = result["figures"]["new"]["0"]["configs"]
    assert len(configs) == 3 and all(len(c["val_loss"]) == 3 for c in configs)
    assert (tmp_path / "rank_fidelity-tiny.png").stat().st_size > 0


def test_search_adapts_shape_folder(tmp_path) -> None:
    """search_adapts.py's renderer: countnet's folder format, the same images for the same
    seed, other images for another seed (the held-out folder is drawn separately)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from shape_folder import IMAGE_SIZE, write_folder

    counts = write_folder(tmp_path / "a", 6, seed=1)
    write_folder(tmp_path / "b", 6, seed=1)
    write_folder(tmp_path / "c", 6, seed=2)
    rows = read_labels_csv(tmp_path / "a" / "labels.csv")
    assert [r.count for r in rows] == counts
    x, y = load_rows(tmp_path / "a", rows, IMAGE_SIZE, 1)  # what `data: folder` reads
    assert x.shape == (6, 1, IMAGE_SIZE, IMAGE_SIZE) and y.tolist() == counts
    images = {k: [(tmp_path / k / r.name).read_bytes() for r in rows] for k in "abc"}
    assert images["a"] == images["b"]
    assert all(p != q for p, q in zip(images["a"], images["c"]))


@pytest.mark.slow
def test_gpu_sh_cpu_check(tmp_path) -> None:
    """gpu.sh's code paths on the CPU: fit throughput and concurrent `countnet train` runs."""
    env = {**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path)}
    # data.py has its own test above: --no-data.
    out = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--cpu-check", "--levels", "1,2",
                          "--no-data"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = check_result(tmp_path / "gpu-cpu-check.json")
    assert set(result["concurrency"]) == {"1", "2"}
    assert set(result["throughput"]) == {"simple/fp32", "simple/bf16+channels_last",
                                         "resnet18/fp32", "resnet18/bf16+channels_last"}


def test_run_all_lists_every_script() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--list", "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("data.py", "precision.py", "loop.py", "overhead.py", "trial_startup.py",
                 "search_efficiency.py", "default_seeds.py", "gpu.sh"):
        assert name in out.stdout
    assert out.stdout.count("--quick") == 7  # gpu.sh has one size


def test_readme_says_what_make_bench_runs() -> None:
    """The README's `make bench` item names run_all's scripts, in run_all's order, as what it
    runs, then other bench/ files to run by hand: a newcomer knows what ran and what did not."""
    run_all = load_script("run_all")
    text = (BENCH.parent / "README.md").read_text()
    item = text[text.index("- `make bench`"):]
    item = " ".join(item[:item.index("\n- ")].split())
    ran, by_hand = item.split(" The other benches run by hand")
    runs = ran.split(" Each prints")[0]  # "... runs eight benches ...: `data`, ... `gpu.sh` (...)."
    assert re.findall(r"`([a-z_]+)(?:\.sh)?`", runs) == list(run_all.SCRIPTS)
    # Those it names to run by hand, and the files named as their parts, are bench/ files that
    # run_all does not run.
    named = re.findall(r"`([a-z_]+)(?:\.py)?`", by_hand)
    assert len(named) >= 6
    for name in named:
        assert (BENCH / f"{name}.py").is_file() and name not in run_all.SCRIPTS, name


def test_photo_folders_hold_real_photos_whose_held_out_half_shares_nothing(tmp_path) -> None:
    photo_folder = load_script("photo_folder")
    counts = photo_folder.write_folders(tmp_path, train_n=6, val_n=2, heldout_n=3, seed=1)
    assert [len(counts[s]) for s in ("train", "val", "heldout")] == [6, 2, 3]
    for split in ("train", "val", "heldout"):
        rows = read_labels_csv(tmp_path / split / "labels.csv")
        photos = folder_photos(tmp_path / split, rows)  # countnet's reader: boxes match counts
        assert [len(p.boxes) for p in photos] == counts[split]
        with Image.open(photos[0].path) as im:
            assert im.size == (photo_folder.PHOTO_W, photo_folder.PHOTO_H) and im.mode == "RGB"
    seen, unseen = photo_folder.load_sources(False), photo_folder.load_sources(True)
    for mine, theirs in ((seen.faces, unseen.faces), (seen.non_faces, unseen.non_faces)):
        assert not any(np.array_equal(a, b) for a in mine for b in theirs)
    # The grounds are the left and the right half of the same photographs, never one pixel twice.
    assert len(seen.grounds) == len(unseen.grounds) == len(photo_folder.GROUNDS)


def test_real_photos_tiny_default_arm(tmp_path) -> None:
    result = run_tiny("real_photos", tmp_path, "--arms", "default")
    runs = result["arms"]["default"]["0"]
    assert runs["rel_mae"] >= 0 and runs["n"] == 8
    assert result["goals"] == {"default_rel_mae_le_5pct": result["goal_met"]}
