"""A search with URI storage (file://, through pyarrow as s3:// is): record, study, resume,
export."""

from __future__ import annotations

import json
from pathlib import Path

import optuna

from countnet.cli import main
from countnet.experiment import SEARCH_INFO_FILE, STUDY_FILE
from tests.tune.conftest import TINY, write_space

SPACE = {
    "target": "generalise",
    "fixed": TINY,
    "search": {"lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}},
    "scheduler": {"max_epochs": 2, "grace_period": 2, "reduction_factor": 2},
    "num_samples": 2,
    "max_concurrent": 2,
}


def test_uri_storage_search_resume_export(ray_local, tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # the study's fixed local home: ~/countnet/studies
    monkeypatch.chdir(tmp_path)  # nothing may land in the driver's cwd
    bucket = tmp_path / "bucket"
    uri = f"file://{bucket}/u"
    space = write_space(tmp_path / "space.yaml", SPACE)
    assert main(["search", "--space", str(space), "--storage", f"file://{bucket}",
                 "--name", "u"]) == 0

    exp = bucket / "u"
    record = json.loads((exp / SEARCH_INFO_FILE).read_text())
    study_file = home / "countnet" / "studies" / "u" / STUDY_FILE
    assert record["study"] == f"sqlite:///{study_file}" and study_file.is_file()
    assert (exp / "space.yaml").is_file()
    copy = optuna.load_study(study_name="u", storage=f"sqlite:///{exp / STUDY_FILE}")
    assert len(copy.trials) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bucket", "home", "space.yaml"]

    assert main(["search", "--resume", uri]) == 0  # a URI, not mangled into a path
    bundle = tmp_path / "bundle"
    assert main(["export", uri, "--out", str(bundle)]) == 0
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["experiment"] == uri
    assert Path(bundle / "model.pt").is_file()
