"""The `countnet` console script, run as a user would: real processes, real PNG files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import tiny_config, tiny_flags
from tests.countnet.images import png_header

COUNTNET = shutil.which("countnet") or str(Path(sys.executable).parent / "countnet")
CORE_COMMANDS = ("generate", "train", "predict", "diagnose", "overfit-check")


def countnet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([COUNTNET, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_command() -> None:
    out = countnet("--help")
    assert out.returncode == 0
    for name in (*CORE_COMMANDS, "search", "export"):
        assert name in out.stdout


@pytest.mark.parametrize("command", CORE_COMMANDS)
def test_every_core_command_has_help(command) -> None:
    out = countnet(command, "--help")
    assert out.returncode == 0 and "--smoke-test" in out.stdout


def test_generate_train_predict_round_trip(tmp_path) -> None:
    images = tmp_path / "images"
    gen = countnet("generate", "--out", str(images), "--n", "6", "--seed", "4")
    assert gen.returncode == 0, gen.stderr
    labels = (images / "labels.csv").read_text().splitlines()
    assert labels[0] == "filename,count" and len(labels) == 7
    run = tmp_path / "run"
    train = countnet("train", "--smoke-test", "--out", str(run), "--no-progress",
                     "--set", "epochs=3")
    assert train.returncode == 0, train.stderr
    assert "best epoch" in train.stdout and f"tensorboard --logdir {run}" in train.stdout
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    pred = countnet("predict", str(run), str(images))
    assert pred.returncode == 0, pred.stderr
    rows = pred.stdout.strip().splitlines()
    assert rows[0] == "filename,count,raw" and len(rows) == 7
    for row, label in zip(rows[1:], labels[1:]):
        path, count, raw = row.split(",")
        assert Path(path).name == label.split(",")[0]
        assert int(count) == max(0, round(float(raw)))


def test_train_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    args = ["train", "--out", str(run), "--no-progress", "--set", "train_size=3000",
            "--set", "val_size=64", "--set", "width=8", "--set", "depth=3", "--set", "epochs=3"]
    proc = subprocess.Popen([COUNTNET, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
    proc.wait()
    done = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert done in ([1], [1, 2])
    again = countnet("train", "--resume", str(run), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("command", ["generate", "train", "predict"])
def test_smoke_tests_run(command) -> None:
    out = countnet(command, "--smoke-test")
    assert out.returncode == 0, out.stderr


# --- bad input: one line on stderr, exit 2, nothing written ---------------------------------------
# Each case builds its files under tmp_path and returns the command line (run with cwd=tmp_path).
SMALL = {"image_size": 32, "max_count": 5}  # on top of the suite's TINY: small input images
FOLDER_TRAIN = ["train", "--smoke-test", "--no-progress", "--set", "data=folder",
                "--set", "data_dir=data", "--set", "image_size=32", "--out", "run"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


class _Evil:
    """Unpickled as code, it would create a file: proof that a bundle cannot run code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _png(path: Path, size: int = 32) -> None:
    Image.new("L", (size, size), 40).save(path)



def _labels(text: str | bytes) -> Callable[[Path], list[str]]:
    """A data folder of 10 small images with this labels.csv, trained on."""
    def setup(tmp: Path) -> list[str]:
        (tmp / "data").mkdir()
        for i in range(10):
            _png(tmp / "data" / f"{i}.png", 8)
        _png(tmp / "outside.png", 8)
        raw = text if isinstance(text, bytes) else text.replace("OUTSIDE", str(tmp / "outside.png"))
        (tmp / "data" / "labels.csv").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
        return FOLDER_TRAIN
    return setup


def _count_row(count: str) -> Callable[[Path], list[str]]:
    return _labels("filename,count\n" + "".join(f"{i}.png,1\n" for i in range(9))
                   + f"9.png,{count}\n")


def _carpk_traversal(tmp: Path) -> list[str]:
    for d in ("Images", "Annotations", "ImageSets"):
        (tmp / "carpk" / d).mkdir(parents=True)
    (tmp / "carpk" / "ImageSets" / "train.txt").write_text("a\n../../secret\n")
    _png(tmp / "carpk" / "Images" / "a.png")
    (tmp / "carpk" / "Annotations" / "a.txt").write_text("1 1 4 4 1\n")
    _png(tmp / "secret.png")
    (tmp / "secret.txt").write_text("1 1 4 4 1\n")
    return ["train", "--smoke-test", "--no-progress", "--set", "data=carpk",
            "--set", "data_dir=carpk", "--out", "run"]


def _bundle(edit_config: Callable[[dict], None] | None = None,
            model_pt: Callable[[Path, Path], None] | None = None,
            image: Callable[[Path], None] = _png,
            config_text: str | None = None) -> Callable[[Path], list[str]]:
    """An untrained bundle (and an image a.png) to predict with, optionally spoilt."""
    def setup(tmp: Path) -> list[str]:
        from countnet.bundle import write_bundle
        from countnet.models import model_from_config

        cfg = tiny_config(SMALL)
        bundle = write_bundle(tmp / "bundle", model_from_config(cfg).state_dict(), cfg, {})
        edit = edit_config
        if model_pt is not None:
            model_pt(bundle / "model.pt", tmp)
            # config.json records the spoilt file's own sha256, as a bundle made that way (by
            # anyone) would: the load passes the integrity check and meets the case itself.
            edit = _record_sha256(bundle / "model.pt", then=edit_config)
        if edit is not None:
            config = json.loads((bundle / "config.json").read_text())
            edit(config)
            (bundle / "config.json").write_text(json.dumps(config))
        if config_text is not None:
            (bundle / "config.json").write_text(config_text)
        image(tmp / "a.png")
        return ["predict", "bundle", "a.png"]
    return setup


def _set_train_config(**values: object) -> Callable[[dict], None]:
    return lambda config: config["train_config"].update(values)


def _record_sha256(model_pt: Path,
                   then: Callable[[dict], None] | None = None) -> Callable[[dict], None]:
    """An edit of config.json that records model_pt's sha256 (then makes edit `then`)."""
    digest = hashlib.sha256(model_pt.read_bytes()).hexdigest()

    def edit(config: dict) -> None:
        config["sha256"] = {"model.pt": digest}
        if then is not None:
            then(config)
    return edit


def _truncate(path: Path, _tmp: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _wrong_shapes(path: Path, _tmp: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["body.0.weight"] = torch.zeros(2, 2)
    torch.save(state, path)


def _used_run(tmp: Path) -> list[str]:
    (tmp / "run" / "checkpoints").mkdir(parents=True)
    (tmp / "run" / "config.yaml").write_text("epochs: 1\n")
    (tmp / "run" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    return ["train", "--smoke-test", "--out", "run"]


def _generated(tmp: Path) -> list[str]:
    (tmp / "gen").mkdir()
    _png(tmp / "gen" / "scene_000000.png")
    (tmp / "gen" / "labels.csv").write_text("filename,count\nscene_000000.png,0\n")
    return ["generate", "--out", "gen", "--n", "3"]


def _photos(tmp: Path) -> list[str]:
    (tmp / "photos").mkdir()
    _png(tmp / "photos" / "holiday.png")
    (tmp / "photos" / "labels.csv").write_text("holiday.png,3\n")
    return ["generate", "--out", "photos", "--n", "3", "--force"]


def _a_file(command: str) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        (tmp / "afile").write_text("not a directory\n")
        return [command, "--smoke-test", "--out", "afile"] if command == "train" else [
            command, "--out", "afile", "--n", "2"]
    return setup


def _unwritable(tmp: Path) -> list[str]:
    if os.geteuid() == 0:  # root writes through any mode bits; sysfs refuses even root
        return ["generate", "--out", "/sys/countnet-test-out", "--n", "2"]
    (tmp / "ro").mkdir(mode=0o555)
    return ["generate", "--out", "ro/out", "--n", "2"]


def _args(*args: str) -> Callable[[Path], list[str]]:
    return lambda _tmp: list(args)


BAD_INPUTS = [
    # config: keys, types, files
    ("unknown key", _args("train", "--set", "learning_rate=1"),
     "unknown config key(s): learning_rate"),
    ("wrong type", _args("train", "--set", "epochs=many"), "epochs: expected int"),
    ("missing config", _args("train", "--config", "/nonexistent.yaml"),
     "/nonexistent.yaml: cannot read"),
    ("scene too dense (generate)", _args("generate", "--out", "x", "--max-count", "40"),
     "raise image_size"),
    ("scene does not fit", _args("train", "--set", "image_size=16"), "scene does not fit"),
    ("depth 1", _args("train", "--set", "depth=1"), "depth: the simple model needs >= 2"),
    ("NaN noise", _args("train", "--set", "noise_max=.nan"), "noise_max: must be a finite"),
    ("inf lr", _args("train", "--set", "lr=.inf"), "lr: must be a finite"),
    pytest.param("cuda in train", _args("train", "--set", "device=cuda", "--smoke-test"),
                 "device=cuda: CUDA is not available", marks=NO_CUDA),
    # labels.csv
    ("labels not UTF-8", _labels(b"filename,count\n0.png,1\n\xe9t\xe9.png,2\n"),
     "labels.csv:3: not UTF-8 text"),
    ("labels UTF-16", _labels("filename,count\n0.png,1\n".encode("utf-16")),
     "labels.csv:1: not UTF-8 text"),
    ("unclosed quote", _labels('filename,count\n0.png,1\n"1.png,2\n'), "malformed CSV"),
    ("junk after quote", _labels('filename,count\n"0.png"x,1\n'),
     "labels.csv:2: malformed CSV"),
    ("three fields", _labels("filename,count\n0.png,1,2\n"), "expected 'filename,count'"),
    ("count 1e39", _count_row("1e39"), "labels.csv:11: count '1e39' is above the maximum"),
    ("count 1e400", _count_row("1e400"), "count '1e400' is not finite"),
    ("count nan", _count_row("nan"), "count 'nan' is not finite"),
    ("count inf", _count_row("inf"), "count 'inf' is not finite"),
    ("count negative", _count_row("-1"), "count '-1' is negative"),
    ("count fractional", _count_row("2.5"), "count '2.5' is not a whole number"),
    ("count above cap", _count_row("100001"), "above the maximum of 100000"),
    ("count not a number", _count_row("three"), "count 'three' is not a number"),
    ("row leaves folder", _labels("filename,count\n../outside.png,1\n"),
     "file name '../outside.png' leaves the dataset folder"),
    ("absolute row", _labels("filename,count\nOUTSIDE,1\n"), "is absolute"),
    ("carpk leaves folder", _carpk_traversal, "'../../secret' leaves the dataset folder"),
    # images
    ("decompression bomb", _bundle(image=lambda p: png_header(p, 20000, 20000)),
     "a.png: over Pillow's decompression-bomb limit"),
    ("over pixel cap", _bundle(image=lambda p: png_header(p, 10000, 10000)),
     "a.png: 10000x10000 px is over the limit of 64000000 decoded pixels"),
    ("not an image", _bundle(image=lambda p: p.write_text("hello")), "cannot decode image"),
    # bundles
    ("no bundle", _args("predict", "/nonexistent-bundle", "a.png"), "/nonexistent-bundle"),
    ("no train_config", _bundle(edit_config=lambda c: c.pop("train_config")),
     "config.json: no 'train_config' key"),
    ("config not JSON", _bundle(config_text='{"train_config": {'),
     "config.json: not valid JSON"),
    ("bad config key", _bundle(edit_config=_set_train_config(bogus=1)),
     "config.json: train_config: unknown config key(s): bogus"),
    ("absurd image_size", _bundle(edit_config=_set_train_config(image_size=100000)),
     "train_config: image_size: at most 1024"),
    ("absurd width", _bundle(edit_config=_set_train_config(width=1_000_000)),
     "train_config: width"),
    ("absurd depth", _bundle(edit_config=_set_train_config(depth=100_000)),
     "train_config: depth"),
    ("model.pt a list", _bundle(model_pt=lambda p, _t: torch.save([1, 2], p)),
     "model.pt: not a state_dict"),
    ("model.pt truncated", _bundle(model_pt=_truncate), "model.pt: not a readable torch file"),
    ("model.pt wrong shapes", _bundle(model_pt=_wrong_shapes), "weights do not fit"),
    ("malicious model.pt", _bundle(model_pt=lambda p, t: torch.save(
        {"w": _Evil(str(t / "PWNED"))}, p)), "model.pt: refused: it holds Python objects"),
    ("malicious raw pickle", _bundle(model_pt=lambda p, t: p.write_bytes(
        pickle.dumps(_Evil(str(t / "PWNED"))))), "model.pt: refused"),
    pytest.param("cuda in predict", lambda t: [*_bundle()(t), "--device", "cuda"],
                 "--device cuda: CUDA is not available", marks=NO_CUDA),
    # output directories
    ("generate into a used dir", _generated, "--out gen: not empty"),
    ("train into a used run", _used_run, "--out run: not empty"),
    ("--force on photos", _photos, "so --force will not delete it"),
    ("generate --out a file", _a_file("generate"), "--out afile: is a file"),
    ("train --out a file", _a_file("train"), "--out afile: is a file"),
    ("--out under a file", lambda t: [*_a_file("generate")(t)[:1], "--out", "afile/x"],
     "afile is a file, not a directory"),
    ("--out not writable", _unwritable, "cannot write in"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under root; files with size and mtime (directories change mtime on a probe)."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size,
                                                             p.stat().st_mtime_ns)
            for p in root.rglob("*")}


# All cases run in ONE process (one import of torch instead of ~50; minutes less on 2 cores),
# each exactly as the console script runs it: main(argv), with the process's own file
# descriptors 1 and 2 redirected to files, fresh warning state (a warning prints once per case,
# as in a fresh process), and no cached data from an earlier case. An exception that escapes
# main() is printed as the interpreter would: a "Traceback" that fails the test.
DRIVER = r"""
import json, os, sys, traceback, warnings
from countnet.cli import main
from countnet.datasets import clear_cache

codes = []
for case in json.loads(sys.argv[1]):
    os.chdir(case["cwd"])
    clear_cache()
    with open(case["stdout"], "w") as out, open(case["stderr"], "w") as err:
        sys.stdout.flush(); sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            with warnings.catch_warnings():
                try:
                    code = main(case["args"])
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else 1
                except BaseException:
                    traceback.print_exc()
                    code = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
            os.close(saved[0]); os.close(saved[1])
    codes.append(code)
print(json.dumps(codes))
"""


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory) -> dict[str, dict]:
    """Build every case's files, run them all in one driver process, collect what they did."""
    logs = tmp_path_factory.mktemp("logs")
    cases, runs = {}, []
    for case in BAD_INPUTS:
        name, setup, _ = case.values if hasattr(case, "values") else case
        if any(m.name == "skipif" and m.args[0] for m in getattr(case, "marks", ())):
            continue  # e.g. the cuda cases on a machine with CUDA: they would train
        cwd = tmp_path_factory.mktemp("case")
        cases[name] = {"cwd": cwd, "args": setup(cwd), "before": _snapshot(cwd)}
        runs.append({"cwd": str(cwd), "args": cases[name]["args"],
                     "stdout": str(logs / f"{len(runs)}.out"),
                     "stderr": str(logs / f"{len(runs)}.err")})
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    codes = json.loads(proc.stdout.strip().splitlines()[-1])
    for run, code, case in zip(runs, codes, cases.values()):
        case.update(code=code, stderr=Path(run["stderr"]).read_text(), after=_snapshot(case["cwd"]))
    return cases


@pytest.mark.parametrize("case,setup,message", BAD_INPUTS, ids=[_case_id(c) for c in BAD_INPUTS])
def test_bad_input_exits_2_with_one_line(case, setup, message, bad_input_results) -> None:
    result = bad_input_results[case]
    stderr = result["stderr"]
    assert result["code"] == 2, stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert message in stderr and "Traceback" not in stderr
    assert result["after"] == result["before"]  # nothing written, nothing deleted
    assert not (result["cwd"] / "PWNED").exists()  # a bundle never runs code


def test_malicious_bundle_runs_no_code_in_the_real_command(tmp_path) -> None:
    """The same proof through the console script itself, end to end."""
    args = _bundle(model_pt=lambda p, t: torch.save({"w": _Evil(str(t / "PWNED"))}, p))(tmp_path)
    out = countnet(*args, cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "refused: it holds Python objects" in out.stderr and out.stdout == ""
    assert not (tmp_path / "PWNED").exists()


def test_bad_labels_row_exits_2_naming_file_and_row(tmp_path) -> None:
    data = tmp_path / "data"
    assert countnet("generate", "--out", str(data), "--n", "10").returncode == 0
    with (data / "labels.csv").open("a") as f:
        f.write("scene_000003.png,three\n")
    out = countnet("train", "--set", "data=folder", "--set", f"data_dir={data}", "--smoke-test")
    assert out.returncode == 2
    assert "labels.csv:12: count 'three' is not a number" in out.stderr


# --- never clobber, never mix ---------------------------------------------------------------
TINY_TRAIN = ["--no-progress", *tiny_flags(SMALL, epochs=1)]


def test_second_generate_is_refused_and_force_replaces_cleanly(tmp_path) -> None:
    data = tmp_path / "data"
    assert countnet("generate", "--out", str(data), "--n", "8").returncode == 0
    again = countnet("generate", "--out", str(data), "--n", "3")
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert "pass --force" in again.stderr and len(list(data.glob("*.png"))) == 8
    forced = countnet("generate", "--out", str(data), "--n", "3", "--force")
    assert forced.returncode == 0, forced.stderr
    # Replaced, not merged: 3 rows and exactly their 3 images, nothing of the first 8 left.
    assert sorted(p.name for p in data.iterdir()) == [
        "labels.csv", "scene_000000.png", "scene_000001.png", "scene_000002.png"]
    assert len((data / "labels.csv").read_text().splitlines()) == 4
    assert not list(tmp_path.glob(".data*"))  # no staging directory left behind


def test_second_train_is_refused_and_force_starts_afresh(tmp_path) -> None:
    run = tmp_path / "run"
    assert countnet("train", "--out", str(run), *TINY_TRAIN).returncode == 0
    (run / "stale.txt").write_text("from the first run\n")
    again = countnet("train", "--out", str(run), *TINY_TRAIN)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1
    assert f"--out {run}: not empty" in again.stderr and "--force" in again.stderr
    forced = countnet("train", "--out", str(run), *TINY_TRAIN, "--force")
    assert forced.returncode == 0, forced.stderr
    # One run, not two appended: epochs read 1, not 1, 1; the old run's files are gone.
    assert [json.loads(line)["epoch"] for line in
            (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not (run / "stale.txt").exists()
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_resume_after_a_torn_metrics_line(tmp_path) -> None:
    """A crash while writing metrics.jsonl: resume continues and the log is valid JSON again."""
    from countnet.rundir import RunLogger
    from countnet.train import fit

    run = tmp_path / "run"
    cfg = tiny_config(SMALL, train_size=96, val_size=32, batch_size=32, epochs=3)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), RunLogger(run, cfg) as logger:
        def crash_after_epoch_2(metrics, save) -> None:
            logger(metrics, save)
            if metrics["epoch"] == 2:
                raise Crash

        fit(cfg, crash_after_epoch_2)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "lr_now": 0.00')  # half a line: the process died mid-write
    out = countnet("train", "--resume", str(run), "--no-progress")
    assert out.returncode == 0, out.stderr
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_diverging_run_leaves_only_finite_checkpoints(tmp_path) -> None:
    run = tmp_path / "run"
    # The sum head: at lr 1e6 the density head's ReLU dies instead (every count 0, finite).
    out = countnet("train", "--out", str(run), *TINY_TRAIN, "--set", "lr=1e6",
                   "--set", "epochs=2", "--set", "pool=sum")
    assert out.returncode == 1
    assert "training diverged in epoch 1" in out.stderr
    assert "no epoch was finite, so nothing was checkpointed" in out.stderr
    # Strict JSON (no bare NaN): the diverged epoch is logged with nulls.
    rows = [json.loads(line, parse_constant=pytest.fail)
            for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 1 and rows[0]["train_loss"] is None
    for ckpt in run.glob("checkpoints/*/checkpoint.pt"):  # none here; any must be finite
        state = torch.load(ckpt, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_diverged_epoch_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    """Epoch 2 diverges: `last` and `best` keep epoch 1, and the message says so."""
    import countnet.cli.train as train_cli
    from countnet.checkpoint import load_checkpoint
    from countnet.cli import main
    from countnet.train import Diverged

    real_fit = train_cli.fit

    def fit_diverging_in_epoch_2(cfg, on_epoch_end, **kwargs):
        def on_epoch(metrics, save) -> None:
            if metrics["epoch"] == 2:  # what fit reports for a NaN epoch, then raises
                on_epoch_end({**metrics, "train_loss": math.nan, "val_loss": math.inf}, save)
                raise Diverged(2)
            on_epoch_end(metrics, save)
        return real_fit(cfg, on_epoch, **kwargs)

    monkeypatch.setattr(train_cli, "fit", fit_diverging_in_epoch_2)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY_TRAIN, "--set", "epochs=3"]) == 1
    err = capsys.readouterr().err
    assert ("training diverged in epoch 2 (non-finite loss); lower lr; checkpoints/last holds "
            "epoch 1, the last finite one, checkpoints/best epoch 1") in err
    for name in ("last", "best"):
        assert load_checkpoint(run / "checkpoints" / name)["epoch"] == 1
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[1])["train_loss"] is None and "NaN" not in rows[1]


def test_predict_prints_nan_for_a_non_finite_prediction(tmp_path) -> None:
    from countnet.bundle import write_bundle
    from countnet.models import model_from_config

    cfg = tiny_config(SMALL)
    state = model_from_config(cfg).state_dict()
    state["head.fc.bias"].fill_(math.nan)
    write_bundle(tmp_path / "nan", state, cfg, {})
    state["head.fc.bias"].fill_(math.inf)
    write_bundle(tmp_path / "inf", state, cfg, {})
    _png(tmp_path / "a.png")
    for bundle, raw in (("nan", "nan"), ("inf", "inf")):
        out = countnet("predict", bundle, "a.png", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["filename,count,raw", f"a.png,nan,{raw}"]
        assert "1 prediction(s) were not finite" in out.stderr and "Traceback" not in out.stderr


# --- OMP_WAIT_POLICY: set by the command, not by importing countnet (countnet.runtime) --------
OMP_SPY = """
import os, sys
import countnet.cli as cli
seen = []
real = cli.set_omp_env
cli.set_omp_env = lambda: (seen.append("torch" in sys.modules), real())
try:
    cli.main(["--version"])
except SystemExit:
    pass
assert seen == [False], seen  # called once, before any subcommand loaded torch
assert "torch" in sys.modules  # ... which building the parser then did
print("OMP_WAIT_POLICY=" + os.environ["OMP_WAIT_POLICY"])
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose environment has no OMP_WAIT_POLICY but `env`'s."""
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, timeout=300)


def test_importing_countnet_sets_no_environment_variable() -> None:
    out = _python("import os, sys, countnet, countnet.cli, countnet.runtime\n"
                  "assert 'OMP_WAIT_POLICY' not in os.environ, os.environ['OMP_WAIT_POLICY']\n"
                  "assert 'torch' not in sys.modules  # so main can still set it in time\n")
    assert out.returncode == 0, out.stderr


def test_the_command_sets_omp_wait_policy_before_torch_loads() -> None:
    out = _python(OMP_SPY)
    assert out.returncode == 0 and out.stdout.endswith("\nOMP_WAIT_POLICY=PASSIVE\n"), out
    out = _python(OMP_SPY, OMP_WAIT_POLICY="ACTIVE")  # a user's own setting wins
    assert out.returncode == 0 and out.stdout.endswith("\nOMP_WAIT_POLICY=ACTIVE\n"), out


def test_omp_env_keeps_a_users_setting(monkeypatch) -> None:
    from countnet.runtime import OMP_WAIT_POLICY, omp_env, set_omp_env

    monkeypatch.delenv(OMP_WAIT_POLICY, raising=False)
    assert omp_env() == {OMP_WAIT_POLICY: "PASSIVE"}
    set_omp_env()
    assert os.environ[OMP_WAIT_POLICY] == "PASSIVE"
    monkeypatch.setenv(OMP_WAIT_POLICY, "ACTIVE")
    set_omp_env()
    assert omp_env() == {OMP_WAIT_POLICY: "ACTIVE"} and os.environ[OMP_WAIT_POLICY] == "ACTIVE"
