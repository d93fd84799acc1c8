"""A diverging config (huge SGD lr) ends as `diverged`; the search completes around it."""

from __future__ import annotations

from pathlib import Path

import optuna

from countnet.cli import main
from countnet.experiment import STUDY_FILE
from tests.tune.conftest import TINY, write_space
from tune.results import load_trials

SPACE = {
    "target": "generalise",
    # No gradient clipping (the default clips at norm 1, which keeps even lr 10 finite here).
    # The sum head: at lr 10 the density head's ReLU dies (every count 0, a finite loss).
    "fixed": {**TINY, "optimizer": "sgd", "schedule": "constant", "grad_clip": 0.0,
              "pool": "sum"},
    "search": {"lr": {"type": "choice", "values": [2.0e-5, 10.0]}},  # 10: NaN within epoch 1
    "scheduler": {"max_epochs": 2, "grace_period": 2, "reduction_factor": 2},
    "num_samples": 4,
    "max_concurrent": 2,
}


def test_diverged_trials_end_cleanly_and_are_never_best(ray_local, tmp_path) -> None:
    space = write_space(tmp_path / "diverge.yaml", SPACE)
    storage = tmp_path / "experiments"
    bundle = tmp_path / "bundle"
    code = main(["search", "--space", str(space), "--storage", str(storage), "--name", "div",
                 "--seed", "0", "--export", str(bundle)])
    assert code == 0
    exp = storage / "div"
    trials = load_trials(exp, "val_loss", "min")
    assert len(trials) == 4 and all(t.status == "TERMINATED" for t in trials)
    diverged = [t for t in trials if t.diverged]
    healthy = [t for t in trials if not t.diverged]
    assert diverged and healthy, [t.params for t in trials]
    for t in diverged:
        assert t.params["lr"] == 10.0 and t.outcome == "diverged"
        assert t.best is None and not t.checkpoints
        assert not list(Path(t.path).glob("checkpoint_*"))  # a NaN epoch is never saved
    assert all(t.params["lr"] == 2.0e-5 and t.epochs_run == 2 for t in healthy)
    study = optuna.load_study(study_name="div", storage=f"sqlite:///{exp / STUDY_FILE}")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == len(diverged) and all(t.user_attrs["diverged"] for t in failed)
    # --export took a healthy trial
    import json

    exported = json.loads((bundle / "metrics.json").read_text())
    assert exported["trial_id"] in {t.trial_id for t in healthy}
