"""The numeric flags of `countnet search` and `countnet export` are checked once, in the CLI,
before any work (no space read, no experiment opened, no Ray): one line on stderr, exit 2."""

from __future__ import annotations

import pytest

from countnet.cli import main


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
])
def test_bad_numeric_flag_is_one_line_and_exit_2(argv, expected, tmp_path, capsys) -> None:
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert list(tmp_path.iterdir()) == []  # nothing was written
