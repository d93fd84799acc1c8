"""A trial Optuna was asked for after Ray's last state save is adopted on restore, not re-asked.

Real Optuna study (SQLite) and Ray's own searcher save/restore, as `Tuner.restore` uses them.
"""

from __future__ import annotations

import optuna

from tests.tune.conftest import MAIN_SPACE
from tune.search import make_searcher
from tune.space import parse_space


def test_restored_searcher_adopts_orphaned_running_trial(tmp_path) -> None:
    space = parse_space(MAIN_SPACE)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def searcher():
        return make_searcher(space, 0, storage=optuna.storages.RDBStorage(url), study_name="s")

    before = searcher()
    first = before.suggest("a")
    before.save(str(tmp_path / "searcher.pkl"))  # Ray's last state save ...
    orphan = before.suggest("b")  # ... then an ask that the killed driver never saved

    after = searcher()
    after.restore(str(tmp_path / "searcher.pkl"))
    assert after.suggest("a") == first  # a trial Ray restores keeps its Optuna trial
    # The forgotten one is adopted. Asked again, the seeded TPE restored from the older state
    # would sample the same point as a second trial and leave this one RUNNING forever.
    assert after.suggest("c") == orphan
    assert after._ot_trials["c"].number == 1
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 2
    after.suggest("d")  # no orphan left: a new ask
    assert after._ot_trials["d"].number == 2 and len(study.trials) == 3
