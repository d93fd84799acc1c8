"""The flags of `countnet search` and `countnet export` are checked once, in the CLI, before any
work (no experiment opened, no Ray): one line on stderr, exit 2. The run-level flags
(`--resources`, `--max-concurrent`) override only what they name."""

from __future__ import annotations

from importlib.resources import files

import pytest

from countnet.cli import main
from tune.cli import SMOKE_SPACE, apply_overrides
from tune.overrides import parse_resources_flag
from tune.space import load_space


@pytest.mark.parametrize(("argv", "expected"), [
    (["search", "--smoke-test", "--num-samples", "0"], "--num-samples: must be >= 1, got 0"),
    # Also for a resumed search: refused before its experiment directory is read.
    (["search", "--resume", "{tmp}/nowhere", "--num-samples", "0"],
     "--num-samples: must be >= 1, got 0"),
    (["search", "--resume", "{tmp}/nowhere", "--max-epochs", "0"],
     "--max-epochs: must be >= 1, got 0"),
    (["search", "--smoke-test", "--max-epochs", "0"], "--max-epochs: must be >= 1, got 0"),
    (["search", "--smoke-test", "--max-failures", "-1"], "--max-failures: must be >= 0, got -1"),
    (["search", "--smoke-test", "--confirm-seeds", "-1"],
     "--confirm-seeds: must be >= 0, got -1"),
    (["export", "{tmp}/nowhere", "--out", "{tmp}/bundle", "--confirm-seeds", "-1"],
     "--confirm-seeds: must be >= 0, got -1"),
    (["search", "--smoke-test", "--max-concurrent", "0"], "--max-concurrent: must be >= 1, got 0"),
    (["search", "--smoke-test", "--deterministic", "--max-concurrent", "2"],
     "--deterministic: runs one trial at a time; not with --max-concurrent 2"),
    (["search", "--resume", "{tmp}/nowhere", "--max-concurrent", "4"],
     "--max-concurrent: not with --resume"),
    # --resources: each value by the space file's own rule (tune.space.parse_resources).
    (["search", "--smoke-test", "--resources", "gpu=-1"],
     "--resources gpu=-1: resources_per_trial.gpu: must be a number >= 0, got -1"),
    (["search", "--smoke-test", "--resources", "cpu=0"],
     "--resources cpu=0: resources_per_trial.cpu: must be a number > 0, got 0"),
    (["search", "--smoke-test", "--resources", "foo=1"],
     "resources_per_trial.foo: unknown key (known: cpu, gpu)"),
    (["search", "--smoke-test", "--resources", "cpu=2,gpu=1.5"],
     "resources_per_trial.gpu: above 1 it must be a whole number, got 1.5"),
    (["search", "--smoke-test", "--resources", "gpu=half"],
     "resources_per_trial.gpu: must be a number >= 0, got 'half'"),
    (["search", "--smoke-test", "--resources", "gpu=nan"],
     "resources_per_trial.gpu: must be a number >= 0, got nan"),
    (["search", "--smoke-test", "--resources", "gpu=1,gpu=0"], "gpu: given twice"),
    (["search", "--smoke-test", "--resources", "gpu"], "expected KEY=VALUE[,KEY=VALUE]"),
    (["search", "--smoke-test", "--resources", "cpu=2,"], "expected KEY=VALUE[,KEY=VALUE]"),
    (["search", "--resume", "{tmp}/nowhere", "--resources", "gpu=1"],
     "--resources: not with --resume"),
])
def test_bad_flag_is_one_line_and_exit_2(argv, expected, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a search that wrongly started would write here
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_resources_flag_overrides_only_the_keys_it_names() -> None:
    """No "cpu" key in the flag is fine: the space's cpu stays, and the trainable gets both."""
    smoke = load_space(files("search_spaces") / SMOKE_SPACE)  # cpu 1, gpu 0, 2 at a time
    assert parse_resources_flag("gpu=0.5") == {"gpu": 0.5}
    assert parse_resources_flag(" cpu = 2 , gpu=1") == {"cpu": 2.0, "gpu": 1.0}
    space = apply_overrides(smoke, None, None, parse_resources_flag("gpu=0.5"), 6)
    assert (space.cpu, space.gpu, space.max_concurrent) == (1.0, 0.5, 6)
    assert space.to_dict()["resources_per_trial"] == {"cpu": 1.0, "gpu": 0.5}
    assert apply_overrides(smoke, None, None, {}, None) == smoke


def test_search_help_names_the_run_level_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--resources cpu=N,gpu=G" in text and "--max-concurrent N" in text
    assert "--num-samples" in text
