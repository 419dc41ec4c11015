"""The "Confirmed front" table's text from hand-made figures (``analysis.confirmed_front``,
``search_sections.confirmed_table`` and its caption): the bound on the worse side of a
minimised objective with a spread, a confirmed recipe that an unconfirmed single run
dominates, an integer objective's large values, and recipes with one successful run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from winnow.service.engine.confirmed import figures
from winnow.service.search_spec import Objective
from winnow.ui import analysis, nav
from winnow.ui.search_sections import bound_label, confirmed_caption, confirmed_table

ACCURACY = Objective(name="accuracy", direction="maximize")
LATENCY = Objective(name="latency_ms", direction="minimize")
OBJECTIVES = [ACCURACY, LATENCY]
# single runs of the front: 1 and 2 are confirmed, 3 is not (all three on the front)
IDS = [1, 2, 3]
POINTS = [[0.95, 2.0], [0.90, 1.0], [0.92, 1.15]]
RUNS = {
    1: {"accuracy": [0.93, 0.94, 0.92], "latency_ms": [2.1, 2.4, 2.2]},
    2: {"accuracy": [0.89, 0.90, 0.88], "latency_ms": [1.1, 1.3, 1.2]},
}


def _figures(objectives, runs):
    """``confirmed.figures`` of each trial's runs, given as columns of values."""
    out = {}
    for number, columns in runs.items():
        values = zip(*columns.values(), strict=True)
        rows = [dict(zip(columns, run, strict=True)) for run in values]
        out[number] = figures(objectives, rows)
    return out


def _one_sided(values, worse_above: bool) -> float:
    """The one-sided 95 % Student-t bound, written out here from its definition."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    half = stats.t.ppf(0.95, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return float(values.mean() + (half if worse_above else -half))


def test_a_minimised_objective_s_bound_is_above_its_mean_and_labelled_upper():
    frame = analysis.confirmed_front(OBJECTIVES, IDS, POINTS, _figures(OBJECTIVES, RUNS))
    shown = confirmed_table(frame, OBJECTIVES).set_index("trial")
    assert bound_label(LATENCY) == "latency_ms upper bound" in shown.columns
    assert bound_label(ACCURACY) == "accuracy lower bound" in shown.columns
    for number, columns in RUNS.items():
        row = shown.loc[f"#{number}"]
        mean, std = (nav.parse(t) for t in row["latency_ms"].split(" ± "))
        assert std > 0
        upper = nav.parse(row["latency_ms upper bound"])
        assert upper > mean
        assert upper == pytest.approx(_one_sided(columns["latency_ms"], True), rel=1e-5)
        lower = nav.parse(row["accuracy lower bound"])
        assert lower < nav.parse(row["accuracy"].split(" ± ")[0])
        assert lower == pytest.approx(_one_sided(columns["accuracy"], False), rel=1e-5)


def test_a_confirmed_recipe_beaten_by_an_unconfirmed_single_run_says_so():
    frame = analysis.confirmed_front(OBJECTIVES, IDS, POINTS, _figures(OBJECTIVES, RUNS))
    shown = confirmed_table(frame, OBJECTIVES).set_index("trial")
    # 2's means (0.89, 1.2) are on the confirmed front (1's are 0.93, 2.23) but 3's single
    # run (0.92, 1.15) dominates them; nothing dominates 1's means
    assert shown.loc["#2", "standing"] == analysis.CONFIRMED
    assert shown.loc["#2", "note"] == "dominated by unconfirmed single run #3"
    assert shown.loc["#1", "standing"] == analysis.CONFIRMED and shown.loc["#1", "note"] == ""
    assert shown.loc["#3", "standing"] == analysis.SINGLE and shown.loc["#3", "note"] == ""
    caption = confirmed_caption(frame)
    assert "Standing compares the confirmed means with one another" in caption
    assert "1 confirmed recipes' means are dominated by an unconfirmed single run" in caption
    # without the unconfirmed point, no note
    alone = analysis.confirmed_front(OBJECTIVES, IDS[:2], POINTS[:2], _figures(OBJECTIVES, RUNS))
    assert alone["dominated_by"].isna().all()


def test_an_integer_objective_s_large_values_are_shown_to_the_unit():
    size = Objective(name="model_bytes", direction="minimize")
    objectives = [ACCURACY, size]
    runs = {1: {"accuracy": [0.9, 0.91], "model_bytes": [1_234_567, 1_234_569]}}
    frame = analysis.confirmed_front(
        objectives, [1, 2], [[0.95, 1_234_567], [0.5, 999]], _figures(objectives, runs)
    )
    shown = confirmed_table(frame, objectives).set_index("trial")
    assert shown.loc["#1", "model_bytes"] == f"{1_234_568:,} ± {nav.fmt(math.sqrt(2))}"
    assert shown.loc["#1", "model_bytes single run"] == "1,234,567"
    assert nav.parse(shown.loc["#1", "model_bytes upper bound"]) == pytest.approx(
        _one_sided([1_234_567, 1_234_569], True), abs=0.5
    )
    assert shown.loc["#2", "model_bytes"] == "999"
    assert not any("e+" in text for text in shown.to_numpy().ravel().astype(str))


def test_a_recipe_with_one_successful_run_has_no_spread_and_the_caption_says_so():
    runs = {1: {"accuracy": [0.93], "latency_ms": [2.1]}, 2: RUNS[2]}
    frame = analysis.confirmed_front(OBJECTIVES, IDS, POINTS, _figures(OBJECTIVES, runs))
    shown = confirmed_table(frame, OBJECTIVES).set_index("trial")
    assert "±" not in shown.loc["#1", "accuracy"] and shown.loc["#1", "seeds"] == 1
    assert shown.loc["#1", "accuracy lower bound"] == "—"
    assert "±" in shown.loc["#2", "accuracy"]
    caption = confirmed_caption(frame)
    assert "each trained again with 1 or 3 further seeds" in caption
    assert "1 with one successful run have no ± and no bound" in caption


def test_a_front_with_no_confirmed_point_says_none_is_confirmed():
    # figures for a trial that is not on the front (3 dominates it): every point a single run
    ids, points = [1, 2], [[0.95, 2.0], [0.5, 3.0]]
    frame = analysis.confirmed_front(OBJECTIVES, ids, points, _figures(OBJECTIVES, {2: RUNS[2]}))
    assert list(frame["standing"]) == [analysis.SINGLE]
    caption = confirmed_caption(frame)
    assert caption.startswith("None of the 1 front points is confirmed yet. Bound:")
    assert "further seed" not in caption and "±" not in caption
