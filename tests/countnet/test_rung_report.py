"""rungs.png and report.md's rung section, from hand-made trial histories (real PNG files)."""

from __future__ import annotations

from pathlib import Path

from countnet.rung_report import PNG_RUNGS, write_rung_audit
from tests.countnet.test_report import _assert_png


def _histories() -> dict[str, list[dict]]:
    """Rung 1: 5 trials past it, ρ = -0.8 (noise); rung 2: 3, ρ = 0.5; rung 3: 2, too few."""
    curves = {"a": [9.0, 5.0, 3.0, 2.0], "b": [8.0, 6.0, 4.0, 1.0], "c": [7.0, 7.5, 2.5],
              "d": [6.0, 9.0], "e": [5.0, 4.0], "f": [10.0]}
    return {t: [{"epoch": e, "val_loss": v} for e, v in enumerate(vs, 1)]
            for t, vs in curves.items()}


def test_rung_plot_and_section(tmp_path: Path) -> None:
    audits, lines = write_rung_audit(_histories(), [1, 2, 3], "val_loss", "min", tmp_path)
    _assert_png(tmp_path / PNG_RUNGS)
    text = "\n".join(lines)
    assert lines[0] == "## ASHA's rungs audited"
    assert "| 1 | 5 | 1 | -0.80 |" in lines  # rung, past it, ended there, ρ
    assert "| 2 | 3 | 2 | 0.50 |" in lines
    assert "| 3 | 2 | 1 | too few trials (2) for a rank correlation |" in lines
    assert "**Warning:** ASHA is stopping trials on noise at rung 1 (ρ = -0.80)" in lines
    assert f"]({PNG_RUNGS})" in text
    assert [a.epoch for a in audits] == [1, 2, 3]
    assert text.count("**Warning:**") == 1


def test_no_rung_no_plot(tmp_path: Path) -> None:
    audits, lines = write_rung_audit(_histories(), [], "val_loss", "min", tmp_path)
    assert audits == [] and not (tmp_path / PNG_RUNGS).exists()
    assert "nothing to audit" in "\n".join(lines)
