"""Bench: issue 30. A search of a thousand trials on a cluster, measured at scale by simulation.

    python bench/scale.py [--tiny | --medium] [--shape a,b] [--curves FILE] [--seed 0]
    python bench/scale.py --extract RANK_FIDELITY_JSON   # writes bench/curves/generalise.json

It drives countnet's real search stack at cluster size on one machine: `tune.search.run_search`
with its Optuna TPE searcher (`PruningAwareOptunaSearch`), the SQLite study, StartFromASHA,
the progress lines (`tune.progress`), TensorBoard files and Ray's records; then the report
(`countnet.report.write_report`) and the export (`tune.export.export_best`) of the experiment.
Ray is local with `ray.init(num_cpus=N)`: N virtual CPUs, one per trial, N = the concurrency.

Only the training is replaced (`run_search(train=...)`): each trial maps its sampled config to
the nearest recorded config of the space (bench/curves/generalise.json: learning curves that
bench/rank_fidelity.py trained) and reports that config's recorded val_loss per epoch, after
sleeping a scaled epoch time. Only val_loss was recorded; the other metrics of a row are
stand-ins derived from it (`replay_row`), so that every reader finds its keys. Every epoch
writes a real checkpoint that `countnet export` loads: the state dict of the trial's own
architecture built with `countnet.models` (untrained weights), its config and history. A single
writer actor builds them, so that the trial workers never import torch: a worker with torch
holds about 230 MB, which 64 of them would not fit in 24 GB beside other work.

Shapes (the issue's): (a) 1,000 trials x 16 epochs, 64 at a time, ASHA as generalise.yaml
(grace 4, reduction factor 2); (b) Ray's own scalability shape, 10,000 trials x 1 result, 16 at a
time (1 s each: 625 s). The epoch sleeps make each take about 10 minutes at the minimum.

Figures per shape: wall time (from the search's start to `run_search`'s return) against the
minimum (sum of the epochs' sleeps / concurrency); mean running trials (the trials' busy time
inside the trainable over the search's span) against the concurrency; the searcher's
suggestion latency at 10, 100, 1,000 (and 10,000) trials (TPE samples at random for its first
third, `tune.sampler`); the driver's peak RSS and the machine's peak memory use; the experiment
directory's size; the progress lines printed; the report's and the export's time; the time of
TensorBoard's own reader (`EventMultiplexer`) loading the experiment.
Goal (issue 30 goal 2): wall <= 1.2 x the minimum and mean running >= 0.9 x the concurrency,
on both shapes. `ratio` = the worst wall / minimum over the shapes run.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import os
import resource
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`
from report import RESULTS_DIR, headline, machine, write_result

NAME = "scale"
GOAL_OVERHEAD = 1.2  # Ray's bar: wall <= 1.2 x the minimum
GOAL_RUNNING = 0.9  # mean running trials >= 0.9 x the concurrency asked for
GOAL = ("wall <= 1.2 x (sum of epoch sleeps / concurrency) and mean running trials >= 0.9 x "
        "the concurrency, on every shape; ratio = worst wall / minimum")
ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "generalise.yaml"
CURVES = Path(__file__).resolve().parent / "curves" / "generalise.json"
WRITER = "countnet-scale-checkpoint-writer"  # the named actor that writes the checkpoints
NAMESPACE = "countnet-scale"
START_KEY, END_KEY = "replay_started", "replay_t"  # wall clock (s) in each result row
SLEPT_KEY, CURVE_KEY = "replay_slept_s", "replay_curve"  # the trial's sleeps so far; its curve
LATENCY_AT = (10, 100, 1000, 10000)  # suggestion numbers whose latency is reported
LATENCY_WINDOW = 10  # the median of this many suggestions from each of them
MEMORY_PERIOD_S = 2.0  # how often the machine's available memory is sampled
BASELINE_MSE = 1.0  # a stand-in row's baseline_mse (not recorded)


@dataclass(frozen=True)
class Shape:
    """One search size: trials x epochs, at a time, and the sleep of one epoch."""

    trials: int
    epochs: int
    concurrent: int
    epoch_s: float
    grace: int = 4  # ASHA's grace period (generalise.yaml's)


# size -> shape name -> Shape. Full (a): ASHA runs a trial about 8 of 16 epochs on average, so
# 1,000 x 8 x 4.8 s / 64 = 600 s. (b): 10,000 x 1 s / 16 = 625 s, as Ray's own benchmark.
SIZES: dict[str, dict[str, Shape]] = {
    "full": {"a": Shape(1000, 16, 64, 4.8), "b": Shape(10000, 1, 16, 1.0)},
    "medium": {"a": Shape(100, 16, 16, 1.0), "b": Shape(1000, 1, 16, 1.0)},
    "tiny": {"a": Shape(12, 3, 4, 0.2, grace=1), "b": Shape(20, 1, 4, 0.2, grace=1)},
}


# ---------------------------------------------------------------- the recorded curves


def extract(rank_fidelity_json: Path, out: Path, recipes: tuple[str, ...]) -> Path:
    """Write the curves of `recipes` from a bench/rank_fidelity.py result into `out`.

    Args:
        rank_fidelity_json: the JSON bench/rank_fidelity.py wrote.
        out: the small data file this bench reads.
        recipes: the recipes to keep (each must be in the file).
    """
    record = json.loads(rank_fidelity_json.read_text())
    figures = record["figures"]
    missing = [r for r in recipes if r not in figures]
    if missing:
        raise SystemExit(f"{rank_fidelity_json}: no recipe {', '.join(missing)}")
    kept = {r: [{"seed": int(seed), "values": c["values"],
                 "val_loss": [round(float(v), 6) for v in c["val_loss"]]}
                for seed, fig in figures[r].items() for c in fig["configs"]]
            for r in recipes}
    epochs = (record.get("sizes") or {}).get("epochs", "?")
    how = "--tiny: tiny nets and data" if record.get("quick") else "its full size"
    data = {"source": {"command": f"python bench/{record['command']}", "when": record["when"],
                       "machine": record["machine"], "sizes": record.get("sizes"),
                       "space": Path(str(record.get("space", ""))).name,
                       "file": str(rank_fidelity_json)},
            "note": f"val_loss per epoch of configs drawn at random from the space and trained "
                    f"for {epochs} epochs by bench/rank_fidelity.py ({how}), per recipe; read by "
                    f"bench/scale.py, whose trials replay them",
            "recipes": kept}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    return out


def load_curves(path: Path, recipe: str) -> list[dict[str, Any]]:
    """The recorded configs of `recipe`, each {"values", "val_loss", "id"}.

    Args:
        path: this bench's data file (`extract`), or a bench/rank_fidelity.py result.
        recipe: which recipe's curves.
    """
    data = json.loads(path.read_text())
    if "figures" in data:  # a rank_fidelity result as it is
        by_seed = data["figures"].get(recipe)
        runs = None if by_seed is None else [c for fig in by_seed.values()
                                             for c in fig["configs"]]
    else:
        runs = data["recipes"].get(recipe)
    if not runs:
        raise SystemExit(f"{path}: no curves of recipe {recipe!r}")
    return [{"values": r["values"], "val_loss": [float(v) for v in r["val_loss"]], "id": i}
            for i, r in enumerate(runs)]


def scales(curves: list[dict[str, Any]], keys: list[str]) -> dict[str, tuple[bool, float]]:
    """Per numeric searched key: (log scale?, the spread of the recorded values), which
    `nearest` divides distances by. Log scale when the values span more than a decade."""
    out = {}
    for key in keys:
        vals = [c["values"][key] for c in curves if _number(c["values"].get(key))]
        if len(vals) < 2:
            continue
        log = min(vals) > 0 and max(vals) / min(vals) > 10
        tr = [math.log(v) if log else float(v) for v in vals]
        out[key] = (log, (max(tr) - min(tr)) or 1.0)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def nearest(config: dict[str, Any], curves: list[dict[str, Any]], keys: list[str],
            spread: dict[str, tuple[bool, float]]) -> dict[str, Any]:
    """The recorded config nearest to a trial's: per searched key, the numeric distance over
    the recorded spread (on a log scale for the wide ones), or 1 when a category (or whether
    an optional value is there) differs.

    Args:
        config: the trial's config.
        curves: the recorded configs (`load_curves`).
        keys: the space's searched keys.
        spread: `scales(curves, keys)`.
    """
    def distance(values: dict[str, Any]) -> float:
        total = 0.0
        for key in keys:
            a, b = config.get(key), values.get(key)
            if key in spread and _number(a) and _number(b):
                log, width = spread[key]
                d = (math.log(a) - math.log(b)) if log and a > 0 and b > 0 else a - b
                total += (d / width) ** 2
            elif a != b:
                total += 1.0
        return total

    return min(curves, key=lambda c: distance(c["values"]))


def replay_row(curve: list[float], epoch: int, config: dict[str, Any],
               epoch_s: float) -> dict[str, float]:
    """The metrics of one replayed epoch: the recorded val_loss; the others are stand-ins.

    A curve shorter than the epochs asked for (a --tiny recording) holds its last value.

    Args:
        curve: the recorded val_loss per epoch.
        epoch: the epoch (1-based).
        config: the trial's config (its lr is lr_now's stand-in).
        epoch_s: the epoch's sleep.
    """
    val_loss = curve[min(epoch, len(curve)) - 1]
    mae = math.sqrt(max(val_loss, 0.0))  # stand-ins, not figures of a model
    return {"epoch": epoch, "lr_now": float(config.get("lr", 0.0)), "train_loss": val_loss,
            "train_loss_eval": val_loss, "val_loss": val_loss, "val_mae": mae,
            "val_acc": math.exp(-mae), "val_off_by_one": math.exp(-mae / 3),
            "gap": 0.0, "baseline_mse": BASELINE_MSE, "epoch_time_s": epoch_s,
            "images_per_s": 0.0}


# ---------------------------------------------------------------- the trial side


def replay_trial(config: dict[str, Any], curves: list[dict[str, Any]], keys: list[str],
                 spread: dict[str, tuple[bool, float]], epoch_s: float) -> None:
    """The stand-in trainable: the nearest recorded curve, one sleep and one report per epoch,
    each with a checkpoint (written by the writer actor) that `countnet export` can load.

    It imports neither torch nor countnet: a trial worker stays small.

    Args:
        config: the trial's config (Ray's).
        curves, keys, spread: the recorded configs and how to find the nearest (`nearest`).
        epoch_s: the sleep of one epoch.
    """
    import tempfile

    import ray
    from ray import tune as ray_tune

    started = time.time()
    chosen = nearest(config, curves, keys, spread)
    writer = ray.get_actor(WRITER, namespace=NAMESPACE)
    history: list[dict[str, float]] = []
    slept = 0.0
    for epoch in range(1, int(config["epochs"]) + 1):
        time.sleep(epoch_s)
        slept += epoch_s
        row = replay_row(chosen["val_loss"], epoch, config, epoch_s)
        history.append(row)
        with tempfile.TemporaryDirectory() as tmp:
            ray.get(writer.write.remote(tmp, config, epoch, history))
            ray_tune.report({**row, "diverged": False, START_KEY: started, END_KEY: time.time(),
                             SLEPT_KEY: slept, CURVE_KEY: chosen["id"]},
                            checkpoint=ray_tune.Checkpoint.from_directory(tmp))


class CheckpointWriter:
    """A Ray actor: writes a trial's checkpoint as `countnet.train` does (CHECKPOINT_KEYS, the
    sha256 sidecar), with the untrained state dict of the trial's architecture."""

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}  # architecture -> state dict

    def write(self, directory: str, config: dict[str, Any], epoch: int,
              history: list[dict[str, float]]) -> None:
        import torch

        from countnet.checkpoint import save_checkpoint
        from countnet.models import model_from_config, model_options
        from tune.optuna_space import trial_config

        cfg = trial_config(config)
        arch = json.dumps([cfg.model, *(getattr(cfg, k, None)
                                        for k in sorted(model_options(cfg.model)))],
                          default=str)
        if arch not in self._models:
            torch.manual_seed(0)
            self._models[arch] = model_from_config(cfg).state_dict()
        save_checkpoint(directory, {
            "model": self._models[arch], "optimizer": {}, "scheduler": {}, "epoch": epoch,
            "rng": torch.get_rng_state(), "config": cfg.to_dict(), "history": list(history)})


# ---------------------------------------------------------------- the driver side


class LineCounter:
    """A text stream that counts the lines written through it, and passes them on."""

    def __init__(self, *targets: Any) -> None:
        self.targets, self.lines = targets, 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        for t in self.targets:
            t.write(text)
        return len(text)

    def flush(self) -> None:
        for t in self.targets:
            t.flush()


class MemoryWatch:
    """Samples the machine's MemAvailable in a thread: the peak use over a baseline."""

    def __init__(self) -> None:
        self.baseline = self.lowest = available_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_PERIOD_S):
            self.lowest = min(self.lowest, available_mb())

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def available_mb() -> float:
    """The machine's MemAvailable in MB (/proc/meminfo)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def timed_suggestions(latencies: list[float]) -> Any:
    """Time every `suggest` of countnet's searcher (TPE through Ray's OptunaSearch) in the
    driver: one value per suggestion, in order."""
    from tune.optuna_search import PruningAwareOptunaSearch

    original = PruningAwareOptunaSearch.suggest

    def suggest(self: Any, trial_id: str) -> Any:
        t0 = time.perf_counter()
        out = original(self, trial_id)
        if out is not None:
            latencies.append(time.perf_counter() - t0)
        return out

    PruningAwareOptunaSearch.suggest = suggest
    try:
        yield
    finally:
        PruningAwareOptunaSearch.suggest = original


def latency_at(latencies: list[float]) -> dict[str, float]:
    """The median suggestion latency (ms) from the n-th suggestion on, per LATENCY_AT."""
    out = {}
    for n in LATENCY_AT:
        window = latencies[n - 1:n - 1 + LATENCY_WINDOW]
        if window:
            out[str(n)] = 1000 * statistics.median(window)
    return out


def dir_size_mb(path: Path) -> float:
    """The bytes of every file under `path`, in MB."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def timeline(exp_dir: Path) -> dict[str, Any]:
    """From every trial's result.json: its busy time in the trainable, its sleeps, epochs."""
    from countnet.experiment import RESULT_FILE
    from countnet.rundir import read_jsonl

    busy = slept = 0.0
    first, last, epochs, trials = math.inf, 0.0, 0, 0
    for result in exp_dir.glob(f"trial_*/{RESULT_FILE}"):
        rows = [r for r in read_jsonl(result) or [] if END_KEY in r]
        if not rows:
            continue
        trials += 1
        start, end = rows[0][START_KEY], rows[-1][END_KEY]
        busy += end - start
        slept += rows[-1][SLEPT_KEY]
        epochs += len(rows)
        first, last = min(first, start), max(last, end)
    return {"busy_s": busy, "slept_s": slept, "first_start": first, "last_end": last,
            "epochs": epochs, "trials_with_results": trials}


def tensorboard_load(exp_dir: Path) -> dict[str, Any]:
    """TensorBoard's own reader over the experiment: seconds, runs and tags loaded."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    t0 = time.perf_counter()
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(exp_dir))
    mux.Reload()
    seconds = time.perf_counter() - t0
    runs = mux.Runs()
    # TensorBoard's data-plugin loader keeps scalars as tensors (its "tensors" tags).
    return {"seconds": seconds, "runs": len(runs),
            "tags": sum(len(r.get("tensors", [])) + len(r.get("scalars", []))
                        for r in runs.values())}


def run_shape(label: str, shape: Shape, curves: list[dict[str, Any]], work: Path,
              seed: int, log: Any, profile: Path | None = None,
              time_limit_s: float | None = None) -> dict[str, Any]:
    """One search of `shape` with the real stack and the replayed trials; its figures.

    Args:
        label: the shape's name ("a", "b").
        shape: its size.
        curves: the recorded configs (`load_curves`).
        work: where the experiment, the report and the bundle go.
        seed: the TPE sampler's seed.
        log: the stream of the progress lines (counted).
        profile: write cProfile's statistics of the driver's search here (None: no profile).
        time_limit_s: stop the search after this many seconds as Ctrl+C does (Ray ends it
            cleanly); the figures are then those of the trials that ran.
    """
    import ray
    from ray import tune as ray_tune

    from countnet.report import REPORT_DIR, write_report
    from tune.export import export_best
    from tune.search import run_search
    from tune.space import load_space

    space = load_space(SPACE)
    space = space.replace(num_samples=shape.trials, max_epochs=shape.epochs,
                          grace_period=min(shape.grace, shape.epochs),
                          max_concurrent=shape.concurrent, cpu=1.0, gpu=0.0)
    # The searched keys, and for an optional one the switch that says whether it was drawn.
    keys = [p.name for p in space.params] + [p.switch for p in space.params if p.optional]
    train = ray_tune.with_parameters(replay_trial, curves=curves, keys=keys,
                                     spread=scales(curves, keys), epoch_s=shape.epoch_s)
    cpus = int(ray.cluster_resources().get("CPU", 0))
    latencies: list[float] = []
    t_start: list[float] = []
    name = f"shape-{label}"
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profiler = cProfile.Profile() if profile else None
    # SIGINT, as a user's Ctrl+C: Ray stops the trials and run_search returns what ran.
    timer = (threading.Timer(time_limit_s, os.kill, (os.getpid(), signal.SIGINT))
             if time_limit_s else None)
    if timer:
        timer.start()
    with MemoryWatch() as memory, timed_suggestions(latencies), \
            contextlib.redirect_stderr(log):
        if profiler:
            profiler.enable()
        outcome = run_search(space, storage=str(work), name=name, seed=seed, progress=True,
                             announce=lambda *_: t_start.append(time.time()), train=train)
        t_end = time.time()
        if timer:
            timer.cancel()
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
    exp_dir = Path(outcome.exp_dir)
    line = timeline(exp_dir)
    wall = t_end - t_start[0]
    minimum = line["slept_s"] / shape.concurrent
    if not outcome.finished:  # stopped by --time-limit: up to the last result, not the stop
        wall = line["last_end"] - t_start[0]
    span = line["last_end"] - t_start[0]
    running = line["busy_s"] / span if span > 0 else 0.0
    t0 = time.perf_counter()
    md = write_report(exp_dir, exp_dir / REPORT_DIR)
    report_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    exported = export_best(exp_dir, work / f"bundle-{label}")
    export_s = time.perf_counter() - t0
    size_mb = dir_size_mb(exp_dir)  # with the report, as a user's experiment ends
    board = tensorboard_load(exp_dir)
    text = md.read_text()
    return {
        "shape": asdict(shape), "ray_cpus": cpus, "trials": len(outcome.trials),
        "finished": outcome.finished, "epochs": line["epochs"],
        "wall_s": wall, "minimum_s": minimum, "overhead": wall / minimum if minimum else None,
        "interrupted": not outcome.finished, "trials_span_s": span,
        "after_last_trial_s": t_end - line["last_end"],
        "mean_running": running, "running_share": running / shape.concurrent,
        "suggest_ms_at": latency_at(latencies), "suggestions": len(latencies),
        "suggest_total_s": sum(latencies),
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "driver_peak_rss_before_mb": rss0 / 1024,
        "machine_memory_peak_use_mb": memory.baseline - memory.lowest,
        "experiment_mb": size_mb, "progress_lines": log.lines,
        "report_s": report_s, "report_has_top_trials": "#1 " in text or "| 1 |" in text,
        "report_files": sorted(p.name for p in (exp_dir / REPORT_DIR).iterdir()),
        "export_s": export_s, "exported_trial": exported.metrics["trial_id"],
        "exported_epoch": exported.metrics["epoch"], "tensorboard": board,
        "best_val_loss": outcome.best.best["val_loss"] if outcome.best else None,
        "experiment": str(exp_dir)}


def goals_of(fig: dict[str, Any]) -> dict[str, bool]:
    """Goal 2 on one shape: overhead and running trials."""
    return {"overhead_le_1.2": fig["overhead"] is not None and fig["overhead"] <= GOAL_OVERHEAD,
            "running_ge_0.9": fig["running_share"] >= GOAL_RUNNING}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size_group = p.add_mutually_exclusive_group()
    size_group.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    size_group.add_argument("--medium", action="store_true",
                            help="a: 100 x 16 at 16; b: 1,000 x 1 at 16 (minutes)")
    p.add_argument("--shape", default="a,b", help="shapes to run, comma-separated: a, b")
    p.add_argument("--curves", type=Path, default=CURVES, help="recorded curves (JSON)")
    p.add_argument("--recipe", help="the recipe whose curves replay (default: the space's "
                   "schedule)")
    p.add_argument("--epoch-s", type=float, help="one epoch's sleep (default: by shape)")
    p.add_argument("--trials", type=int, help="trials (default: by shape)")
    p.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed")
    p.add_argument("--keep", type=Path, help="keep the experiments in this directory")
    p.add_argument("--profile", action="store_true",
                   help="write cProfile statistics of the driver's search per shape into "
                   "--out-dir (scale-<shape>.prof)")
    p.add_argument("--time-limit", type=float, metavar="S",
                   help="stop each search after S seconds (as Ctrl+C) and measure the trials "
                   "that ran")
    p.add_argument("--extract", type=Path, metavar="RANK_FIDELITY_JSON",
                   help="write --curves from a bench/rank_fidelity.py result and exit")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    if args.extract is not None:
        print(f"wrote {extract(args.extract, args.curves, ('schedulefree', 'onecycle'))}")
        return 0
    size = "tiny" if args.tiny else "medium" if args.medium else "full"
    labels = [s.strip() for s in args.shape.split(",") if s.strip()]
    if not labels or any(s not in SIZES[size] for s in labels):
        print("bench/scale.py: --shape takes a, b or a,b", file=sys.stderr)
        return 2

    import tempfile

    import ray
    from ray import cloudpickle

    from countnet.config import TrainConfig
    from tune.space import load_space

    # The trainable and the writer travel by value: bench/ is a folder of scripts.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    recipe = args.recipe or load_space(SPACE).base_config().get("schedule",
                                                                TrainConfig().schedule)
    curves = load_curves(args.curves, recipe)
    out = Path(args.out_dir) if args.out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    name = NAME + ("-tiny" if args.tiny else "-medium" if args.medium else "")
    info = machine()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {os.getloadavg()}; "
          f"{len(curves)} recorded curves of recipe {recipe} ({args.curves}); size {size}, "
          f"shapes {labels}", flush=True)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        for label in labels:
            shape = SIZES[size][label]
            if args.trials or args.epoch_s:
                shape = Shape(args.trials or shape.trials, shape.epochs, shape.concurrent,
                              args.epoch_s or shape.epoch_s, shape.grace)
            load_before = os.getloadavg()
            started = not ray.is_initialized()
            if started:  # N virtual CPUs: one per trial of the concurrency
                ray.init(num_cpus=shape.concurrent, include_dashboard=False,
                         logging_level="WARNING", log_to_driver=False, namespace=NAMESPACE)
            writer = ray.remote(num_cpus=0)(CheckpointWriter).options(
                name=WRITER, namespace=NAMESPACE).remote()
            try:
                with (out / f"{name}-progress-{label}.log").open("w") as progress_file:
                    log = LineCounter(sys.stderr, progress_file)
                    fig = run_shape(label, shape, curves, work / label, args.seed, log,
                                    out / f"{name}-{label}.prof" if args.profile else None,
                                    args.time_limit)
            finally:
                ray.kill(writer)
                if started:
                    ray.shutdown()
            fig["load_avg_before"], fig["load_avg_after"] = load_before, os.getloadavg()
            fig["goals"] = goals_of(fig)
            figures[label] = fig
            print(f"shape {label}: {fig['trials']} trials x <= {shape.epochs} epochs at "
                  f"{shape.concurrent}: wall {fig['wall_s']:.0f} s vs minimum "
                  f"{fig['minimum_s']:.0f} s (x{fig['overhead']:.3f}); mean running "
                  f"{fig['mean_running']:.1f} of {shape.concurrent}; suggest ms "
                  f"{ {k: round(v, 1) for k, v in fig['suggest_ms_at'].items()} }; driver "
                  f"peak RSS {fig['driver_peak_rss_mb']:.0f} MB, machine peak use "
                  f"{fig['machine_memory_peak_use_mb']:.0f} MB; experiment "
                  f"{fig['experiment_mb']:.0f} MB; {fig['progress_lines']} progress lines; "
                  f"report {fig['report_s']:.1f} s, export {fig['export_s']:.1f} s, "
                  f"TensorBoard load {fig['tensorboard']['seconds']:.1f} s "
                  f"({fig['tensorboard']['runs']} runs); load average {load_before} -> "
                  f"{fig['load_avg_after']}", flush=True)
    ratio = max(f["overhead"] for f in figures.values())
    met = all(all(f["goals"].values()) for f in figures.values())
    path = write_result(name, ratio, GOAL, met, {
        "size": size, "recipe": recipe, "curves": str(args.curves), "n_curves": len(curves),
        "shapes": figures}, quick=size != "full", out_dir=out)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
