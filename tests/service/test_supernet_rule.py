"""The supernet stage's decision (``supernet_rule``): the inherited accuracy alone until the
screen's ``calibrate_after`` scored candidates have trained results, then a calibrated ensemble
over the proxies and the inherited accuracy, whose features that rank worse than params get
weight 0; rebuilt from stored rows to the same decision. Hand-made scores, no supernet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from winnow.records import TrialRecord
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.api import convert
from winnow.service.engine import Engine, readout
from winnow.service.engine.evidence_ladder import MIN_RESULTS
from winnow.service.engine.supernet_rule import FEATURE, METRIC, POSITION, SupernetRule
from winnow.service.progress_text import ladder_text
from winnow.service.search_spec import Objective
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import InProcessExecutor
from winnow.workers.supernet_trials import SCORE_STAGE, TRAIN_STAGE

from .test_engine import make_spec
from .test_evidence_ladder import HashedByStructure, by_tier

PROXIES = ["synflow", "params"]


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "rule.db"))


class Results:
    """Trained results by candidate number, as ``ProxyScreen`` holds them."""

    def __init__(self) -> None:
        self.labels: dict[int, float] = {}
        self.params: dict[int, float | None] = {}

    def trained(self, number: int, accuracy: float, params: float) -> None:
        self.labels[number], self.params[number] = accuracy, params


def candidates(n: int, seed: int = 0) -> list[dict]:
    """Candidates whose accuracy params ranks well, synflow roughly and the supernet in reverse."""
    rng = np.random.default_rng(seed)
    accuracy = rng.uniform(0.5, 0.9, size=n)
    return [
        {
            "number": i,
            "accuracy": float(a),
            "params": float(a * 1e5 + rng.normal(0, 2e3)),
            "synflow": float(a + rng.normal(0, 0.2)),
            "supernet": float(1.0 - a + rng.normal(0, 0.01)),
        }
        for i, a in enumerate(accuracy)
    ]


def make_rule(results, calibrate_after=5, keep_fraction=0.5, warmup=2) -> SupernetRule:
    return SupernetRule(keep_fraction, warmup, PROXIES, calibrate_after, results, seed=0)


def judge(rule: SupernetRule, c: dict):
    proxies = {"synflow": c["synflow"], "params": c["params"]}
    return rule.judge(c["number"], proxies, c["supernet"])


def test_the_inherited_accuracy_decides_until_calibrate_after_scored_candidates_are_trained():
    results, pool = Results(), candidates(12)
    rule = make_rule(results, calibrate_after=5)
    results.trained(99, 0.9, 1e5)  # a trained candidate the stage never scored: not counted
    for c in pool[:6]:
        verdict = judge(rule, c)
        assert not verdict.calibrated and verdict.score == c["supernet"]
        assert verdict.metrics()["supernet.calibrated"] == 0.0
        assert "supernet.combined" not in verdict.metrics()
    for c in pool[:4]:
        results.trained(c["number"], c["accuracy"], c["params"])
    assert not judge(rule, pool[6]).calibrated  # 4 of the scored trained: not yet
    results.trained(pool[4]["number"], pool[4]["accuracy"], pool[4]["params"])
    verdict = judge(rule, pool[7])
    assert verdict.calibrated and verdict.fitted_on == 5 and verdict.population == 8
    assert verdict.metrics()["supernet.combined"] == verdict.score != pool[7]["supernet"]
    # the quantile is over every member's combined score under this fit
    combined = rule.ensemble.predict(rule.columns)
    assert verdict.threshold == pytest.approx(float(np.quantile(combined, 0.5)))
    assert verdict.keep == (verdict.score >= verdict.threshold)


def test_a_supernet_score_that_ranks_worse_than_params_gets_weight_0_and_the_row_says_so():
    results, pool = Results(), candidates(16, seed=1)
    rule = make_rule(results, calibrate_after=6)
    for c in pool[:8]:
        judge(rule, c)
        results.trained(c["number"], c["accuracy"], c["params"])
    verdict = judge(rule, pool[8])
    assert verdict.calibrated and FEATURE in verdict.zero_weight
    assert rule.ensemble.weights[FEATURE] == 0.0 and rule.ensemble.weights["params"] != 0.0
    assert verdict.metrics()[f"supernet.zero_weight.{FEATURE}"] == 1.0
    assert "supernet.zero_weight.params" not in verdict.metrics()  # the baseline stays
    assert "combined score" in verdict.reason(0.5)


def test_a_supernet_score_that_ranks_well_keeps_its_weight():
    results, pool = Results(), candidates(12, seed=2)
    for c in pool:
        c["supernet"] = c["accuracy"]  # ranks the results perfectly: above params
    rule = make_rule(results, calibrate_after=6)
    for c in pool[:8]:
        judge(rule, c)
        results.trained(c["number"], c["accuracy"], c["params"])
    verdict = judge(rule, pool[8])
    assert verdict.calibrated and FEATURE not in verdict.zero_weight
    assert rule.ensemble.weights[FEATURE] > 0.0


ACCURACY_AND_PARAMS = [Objective(name="accuracy"), Objective(name="params", direction="minimize")]


def small_and_weak(n: int) -> list[dict]:
    """Candidates whose supernet score and synflow grow with their params: the smallest is the
    weakest by score, as nb201's convolution-free cells are."""
    return [
        {"number": i, "params": 1e4 * (i + 1), "synflow": float(i), "supernet": 0.1 + i / 100}
        for i in range(n)
    ]


def test_with_params_an_objective_the_smallest_candidate_is_kept_though_its_score_is_lowest():
    pool = small_and_weak(6)
    smallest = {"number": 6, "params": 5e3, "synflow": -1.0, "supernet": 0.01}
    one = make_rule(Results(), keep_fraction=0.5, warmup=2)
    several = SupernetRule(0.5, 2, PROXIES, 5, Results(), 0, ACCURACY_AND_PARAMS)
    for c in pool:
        judge(one, c), judge(several, c)
    assert not judge(one, smallest).keep  # one score by quantile: the front's end is cut
    verdict = judge(several, smallest)
    assert verdict.keep and verdict.position == 0 and verdict.threshold is None
    assert verdict.metrics()[POSITION] == 0.0


def test_with_params_an_objective_a_candidate_every_member_dominates_is_pruned():
    rule = SupernetRule(0.5, 2, PROXIES, 5, Results(), 0, ACCURACY_AND_PARAMS)
    for c in small_and_weak(6):
        judge(rule, c)
    # bigger than all and scored below all: dominated on (score, params) by every member
    verdict = judge(rule, {"number": 6, "params": 1e6, "synflow": 0.0, "supernet": 0.0})
    assert not verdict.keep and verdict.position == 6 and verdict.allowed == 4
    assert "domination count" in verdict.reason(0.5)
    # a candidate no member dominates (the best score) is kept though it is the biggest
    assert judge(rule, {"number": 7, "params": 2e6, "synflow": 9.0, "supernet": 0.9}).keep


def test_with_params_an_objective_the_combined_score_keeps_the_smallest_once_calibrated():
    results, pool = Results(), candidates(14, seed=5)
    rule = SupernetRule(0.5, 2, PROXIES, 5, results, 0, ACCURACY_AND_PARAMS)
    for c in pool[:12]:
        judge(rule, c)
        results.trained(c["number"], c["accuracy"], c["params"])
    smallest = min(c["params"] for c in pool[:12]) / 2
    verdict = judge(rule, {"number": 12, "params": smallest, "synflow": -5.0, "supernet": 1.5})
    assert verdict.calibrated and verdict.keep and verdict.position == 0
    worst = {"number": 13, "params": 1e7, "synflow": -5.0, "supernet": 1.5}
    verdict = judge(rule, worst)  # params ranks the results well: far the biggest ranks last
    assert verdict.calibrated and not verdict.keep and verdict.position > verdict.allowed


def rows_of(decided: list[tuple[dict, dict]]) -> list[TrialRecord]:
    """The proxy and supernet rows a search would have stored for these decisions."""
    rows = []
    for c, metrics in decided:
        common = {"search_id": "s", "number": c["number"], "candidate": "{}", "candidate_key": "k"}
        proxy = {"proxy.synflow": c["synflow"], "proxy.params": c["params"]}
        rows.append(TrialRecord(None, stage="proxy", status=Status.OK, metrics=proxy, **common))
        status = Status.OK if metrics.get("keep") else Status.PRUNED
        row = {k: v for k, v in metrics.items() if k != "keep"}
        rows.append(TrialRecord(None, stage="supernet", status=status, metrics=row, **common))
    failed = {"search_id": "s", "number": 50, "candidate": "{}", "candidate_key": "k"}
    rows.append(TrialRecord(None, stage="supernet", status=Status.FAILED, **failed))  # no score
    return rows


def test_a_rule_rebuilt_from_the_rows_decides_as_the_uninterrupted_one():
    results, pool = Results(), candidates(20, seed=3)
    live = make_rule(results, calibrate_after=5)
    decided = []
    for k, c in enumerate(pool[:14]):
        verdict = judge(live, c)
        decided.append((c, {METRIC: c["supernet"], "keep": verdict.keep} | verdict.metrics()))
        if k % 2 == 0:  # results arrive as the search goes on, some candidates still training
            results.trained(c["number"], c["accuracy"], c["params"])
    assert live.ensemble is not None
    resumed = make_rule(results, calibrate_after=5)
    resumed.rebuild(rows_of(decided))
    assert resumed.numbers == live.numbers and resumed.scores == live.scores
    for c in pool[14:17]:
        assert judge(resumed, c) == judge(live, c)
        results.trained(c["number"], c["accuracy"], c["params"])
    assert judge(resumed, pool[17]).calibrated


# --- in a search: fake training, proxies and supernet; the real engine, store and ladder ---------

WIDE_SPACE = {
    "architecture": {
        "family": "mlp",
        "depth": [1, 2, 3, 4],
        "width": [16, 24, 32, 48, 64, 96, 128, 192],
        "activation": "relu",
    },
    "optimizer": {"name": "adamw", "lr": 0.001, "batch_size": 64},
}


class SupernetWorld(HashedByStructure):
    """``FakeWorld`` (accuracy grows with width and depth, params ranks it well) with a fake
    supernet: its training writes a file, and its score ranks the candidates in reverse."""

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        arch = spec.candidate.architecture
        if spec.stage == TRAIN_STAGE:
            output = Path(json.loads(spec.options)["output"])
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(b"a stand-in supernet")
            return TrialResult(Status.OK, value=str(output))
        if spec.stage == SCORE_STAGE:
            return TrialResult(
                Status.OK, {METRIC: 1.0 - arch["width"] / 1000 - arch["depth"] / 100}
            )
        return super().__call__(spec, on_epoch)


def test_a_search_combines_supernet_and_proxies_once_calibrated_and_the_ladder_shows_it(store):
    spec = make_spec(
        name="cascade",
        sampler="random",
        screen={
            "proxies": ["synflow", "params"],
            "keep_fraction": 1.0,
            "min_population": 1,
            "calibrate_after": 4,
        },
        supernet={"keep_fraction": 0.6, "warmup": 2},
        extra={"space": WIDE_SPACE, "budget": {"max_trials": 16, "max_proposals": 60}},
    )
    engine = Engine.create(spec, store, InProcessExecutor(SupernetWorld()))
    engine.run()
    rows = store.trials(engine.search_id)
    scored = [r for r in rows if r.stage == "supernet"]
    calibrated = [r for r in scored if r.metrics["supernet.calibrated"] == 1.0]
    assert calibrated and scored[0].metrics["supernet.calibrated"] == 0.0
    assert all("supernet.combined" in r.metrics for r in calibrated)
    # the reversed supernet ranks below params once a tau is measured: its rows say weight 0
    zeroed = [r for r in calibrated if r.metrics.get(f"supernet.zero_weight.{FEATURE}")]
    assert zeroed and zeroed[-1] is calibrated[-1]
    pruned = [r for r in calibrated if r.status == Status.PRUNED]
    assert pruned and all(r.error.startswith("supernet: combined score") for r in pruned)

    # the ladder's combined tier: supernet.combined of the completed, calibrated candidates
    done = {r.number: r.metrics["accuracy"] for r in rows if r.completed(0) and not r.reused}
    mine = [r for r in calibrated if r.number in done]
    expected = stats.kendalltau(
        [r.metrics["supernet.combined"] for r in mine], [done[r.number] for r in mine]
    ).statistic
    ladder = engine.progress()["evidence_ladder"]
    tiers = by_tier(ladder)
    assert [t["tier"] for t in ladder][-2:] == ["supernet", "combined"]
    assert tiers["combined"]["n"] == len(mine) >= MIN_RESULTS
    assert tiers["combined"]["tau"] == pytest.approx(expected)
    assert tiers["supernet"]["zero_weight"]
    # the reversed supernet's weight 0 leaves the combined score ranking the results the right
    # way round, better than the inherited accuracy it was fitted over
    assert tiers["supernet"]["tau"] < 0 < tiers["combined"]["tau"]
    record = store.search(engine.search_id)
    sent = convert.search_dict(convert.search_message(record, engine.progress()))["progress"]
    assert sent["evidence_ladder"] == ladder  # through GetSearch's message and back
    assert f"combined {expected:.3f}" in ladder_text(sent, digits=3)  # winnow status's line
    assert readout.progress(spec, rows)["evidence_ladder"] == ladder  # the stored view

    # resumed: the stage's population and fit come back from the rows to the same decision
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(SupernetWorld()))
    assert resumed.progress()["evidence_ladder"] == ladder
    live_rule, rebuilt = engine.stages[-2].rule, resumed.stages[-2].rule
    assert sorted(rebuilt.numbers) == sorted(live_rule.numbers)
    probe = {"synflow": 500.0, "params": 40_000.0}
    assert rebuilt.judge(999, probe, 0.7) == live_rule.judge(999, probe, 0.7)


class StoppedAtScoring(SupernetWorld):
    """``SupernetWorld`` that is interrupted (as a killed process would be) at its
    ``at``-th supernet scoring, after the candidate's proxy row is stored."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.scored = at, 0

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        if spec.stage == SCORE_STAGE:
            self.scored += 1
            if self.scored == self.at:
                raise KeyboardInterrupt
        return super().__call__(spec, on_epoch)


def test_a_resumed_candidate_that_passed_the_screen_goes_through_the_supernet_stage(store):
    spec = make_spec(
        name="cascade",
        sampler="random",
        screen={"proxies": ["synflow", "params"], "keep_fraction": 1.0, "min_population": 1},
        supernet={"keep_fraction": 0.5, "warmup": 2},
        extra={"space": WIDE_SPACE, "budget": {"max_trials": 5, "max_proposals": 30}},
    )
    engine = Engine.create(spec, store, InProcessExecutor(StoppedAtScoring(at=4)))
    with pytest.raises(KeyboardInterrupt):
        engine.run()
    rows = store.trials(engine.search_id)
    stopped = max(r.number for r in rows)
    assert [r.stage for r in rows if r.number == stopped] == ["proxy"]

    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(SupernetWorld()))
    assert [t.number for t in resumed.state.unscreened] == [stopped]
    resumed.run()
    mine = [r for r in store.trials(engine.search_id) if r.number == stopped]
    stages = [r.stage for r in mine]
    assert stages[:2] == ["proxy", "supernet"]  # judged by the stage, not sent straight on
    assert mine[1].metrics[METRIC] > 0 and (mine[1].status == Status.PRUNED) == (
        "train" not in stages
    )
    assert stopped in resumed.stages[-2].rule.numbers  # and it joined the stage's population
