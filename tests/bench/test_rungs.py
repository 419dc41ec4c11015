"""``winnow bench rungs`` on a small search: the continued search makes the same promotions,
saves the epochs trained twice, and its top-rung accuracy equals the from-scratch one."""

from __future__ import annotations

import json

import pytest

from winnow.bench.rungs import candidates
from winnow.service.cli import main


def test_candidates_are_distinct_and_drawn_by_the_seed():
    drawn = candidates(4, seed=1)
    assert len({str(c) for c in drawn}) == 4 and drawn == candidates(4, seed=1)
    assert drawn != candidates(4, seed=2)


def test_continued_rungs_save_the_epochs_trained_twice(capsys):
    assert main(["bench", "rungs", "--candidates", "3", "--rungs", "1,2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same_promotions"] and result["promotions"]
    starts = {1: 1, 2: 2}  # a promotion to rung r no longer retrains rung r - 1's epochs
    twice = sum(starts[rung] for _, rung in result["promotions"])
    assert result["epochs_continued"] == result["epochs_from_scratch"] - twice
    assert result["saving"] == pytest.approx(twice / result["epochs_from_scratch"])
    # the same networks trained the same way: equal accuracy (the bench's docstring)
    assert result["top_rung_accuracy_continued"] == result["top_rung_accuracy_from_scratch"]
