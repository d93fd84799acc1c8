"""bench/smoothness.py: issue 17's smoothness figure, on curves worked out by hand."""

from __future__ import annotations

import pytest

from tests.bench.scripts import load_script

smoothness = load_script("smoothness")


def test_worst_jump_is_the_largest_rise_over_the_best_so_far_after_epoch_3() -> None:
    # Epoch 4 at 1.8175 after a best of 1.1142 (seed 1 of the default on an Intel Xeon);
    # epoch 6 at 0.6 over a best of 0.5 is smaller; epochs 1-3 are not judged, but set the best.
    curve = [29.1, 2.38, 1.1142, 1.8175, 0.5, 0.6, 0.4]
    assert smoothness.worst_jump(curve) == pytest.approx(1.8175 / 1.1142)
    assert smoothness.worst_jump([9.0, 1.0, 50.0, 0.9, 0.8]) == pytest.approx(0.9)  # monotone
    assert smoothness.worst_jump([3.0, 2.0, 1.0]) is None  # nothing after epoch 3
    assert smoothness.worst_jump([3.0, 2.0], after=1) == pytest.approx(2 / 3)
