"""The evidence ladder: each tier's Kendall tau against the completed trials, from hand-made
results, from a search's engine and from its stored rows (read back independently here)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from winnow.search_space.canonical import structural_hash
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.api import convert
from winnow.service.engine import Engine, readout
from winnow.service.engine.evidence_ladder import MIN_RESULTS, EvidenceLadder, kendall
from winnow.service.progress_text import ladder_text
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import InProcessExecutor

from .test_engine import FakeWorld, make_spec


class HashedByStructure(FakeWorld):
    """``FakeWorld`` with the structural hash for the functional one (the real probe takes most
    of a second per candidate); equal structures are still reused."""

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        if spec.stage == "hash":
            return TrialResult(Status.OK, value=structural_hash(spec.candidate))
        return super().__call__(spec, on_epoch)


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "ladder.db"))


def by_tier(ladder: list[dict]) -> dict[str, dict]:
    return {t["tier"]: t for t in ladder}


def test_kendall_is_scipys_tau_over_the_scored_pairs_and_none_until_enough():
    rng = np.random.default_rng(0)
    results = rng.normal(size=12).tolist()
    scores = [r + s for r, s in zip(results, rng.normal(scale=0.8, size=12), strict=True)]
    scores[3] = scores[7] = None  # not scored by this tier
    n, tau = kendall(scores, results)
    kept = [i for i, s in enumerate(scores) if s is not None]
    expected = stats.kendalltau([scores[i] for i in kept], [results[i] for i in kept]).statistic
    assert n == 10 and tau == pytest.approx(expected) and -1 < tau < 1
    assert kendall(scores[:5], results[:5]) == (MIN_RESULTS - 1, None)  # one of five unscored
    assert kendall([1.0] * 6, results[:6]) == (6, None)  # undefined: every score equal


def test_the_ladder_ranks_each_tier_on_the_candidates_the_screen_scored():
    spec = make_spec(name="cascade", sampler="tpe", screen={"proxies": ["synflow", "naswot"]})
    rng = np.random.default_rng(1)
    accuracy = rng.uniform(0.5, 0.9, size=9)
    completed, scored = [], []
    for n, acc in enumerate(accuracy):
        completed.append((n, {"accuracy": acc, "params": acc * 1e5 + rng.normal(0, 4e3)}))
        proxy = {"proxy.synflow": -acc + rng.normal(0, 0.05), "proxy.naswot": acc}
        proxy |= {"screen.score": acc + rng.normal(0, 0.1), "screen.calibrated": float(n >= 3)}
        if n == 8:
            del proxy["proxy.naswot"]  # a failed proxy: that candidate drops out of its tier
        scored.append((n, "proxy", proxy))
    completed.append((9, {"accuracy": 0.99, "params": 1.0}))  # reused: never screened
    ladder = by_tier(readout.evidence_ladder(spec, completed, scored))
    assert list(ladder) == ["params", "synflow", "naswot", "ensemble"]

    def tau(score, numbers):
        return stats.kendalltau([score(n) for n in numbers], accuracy[numbers]).statistic

    every = list(range(9))
    params = {n: m["params"] for n, m in completed}
    assert ladder["params"]["n"] == 9
    assert ladder["params"]["tau"] == pytest.approx(tau(params.get, every))
    synflow = {n: m["proxy.synflow"] for n, _, m in scored}
    assert ladder["synflow"]["tau"] == pytest.approx(tau(synflow.get, every))
    assert ladder["synflow"]["below_params"] and not ladder["params"]["below_params"]
    assert ladder["naswot"]["n"] == 8 and ladder["naswot"]["tau"] == pytest.approx(1.0)
    assert not ladder["naswot"]["below_params"]
    calibrated = list(range(3, 9))  # rank aggregation's scores are left out
    score = {n: m["screen.score"] for n, _, m in scored}
    assert ladder["ensemble"]["n"] == 6
    assert ladder["ensemble"]["tau"] == pytest.approx(tau(score.get, calibrated))


def test_a_minimised_objective_is_ranked_best_first_and_plain_strategies_have_none():
    spec = make_spec(
        name="cascade",
        screen={"proxies": ["synflow"]},
        extra={"objectives": [{"name": "latency_ms", "direction": "minimize"}]},
    )
    completed = [(n, {"latency_ms": 10.0 - n, "params": float(n)}) for n in range(6)]
    scored = [(n, "proxy", {"proxy.synflow": float(n)}) for n in range(6)]
    ladder = by_tier(readout.evidence_ladder(spec, completed, scored))
    assert ladder["params"]["tau"] == pytest.approx(1.0)  # more params, lower latency here
    assert readout.evidence_ladder(make_spec(name="random"), completed, scored) == []


def test_a_search_reports_its_ladder_in_progress_events_status_and_stored_rows(store):
    screen = {
        "proxies": ["synflow", "params"],
        "keep_fraction": 1.0,
        "min_population": 1,
        "calibrate_after": 4,
        "refit_every": 1,
    }
    spec = make_spec(
        name="cascade", sampler="random", screen=screen, extra={"budget": {"max_trials": 9}}
    )
    engine = Engine.create(spec, store, InProcessExecutor(HashedByStructure()))
    report = engine.run()
    rows = store.trials(report.search_id)

    # read back from the rows alone: completed results against their own proxy rows' scores
    proxy = {r.number: r.metrics for r in rows if r.stage == "proxy"}
    done = [r for r in rows if r.stage == "train" and r.status == "ok" and r.number in proxy]
    accuracy = [r.metrics["accuracy"] for r in done]
    params = stats.kendalltau([r.metrics["params"] for r in done], accuracy).statistic
    synflow = stats.kendalltau([proxy[r.number]["proxy.synflow"] for r in done], accuracy)
    calibrated = [r for r in done if proxy[r.number]["screen.calibrated"] == 1.0]
    ensemble = stats.kendalltau(
        [proxy[r.number]["screen.score"] for r in calibrated],
        [r.metrics["accuracy"] for r in calibrated],
    )
    ladder = engine.progress()["evidence_ladder"]
    tiers = by_tier(ladder)
    assert len(done) >= MIN_RESULTS and len(calibrated) >= MIN_RESULTS
    assert tiers["params"]["n"] == len(done) and tiers["params"]["tau"] == pytest.approx(params)
    assert tiers["synflow"]["tau"] == pytest.approx(synflow.statistic)
    assert tiers["ensemble"]["n"] == len(calibrated)
    assert tiers["ensemble"]["tau"] == pytest.approx(ensemble.statistic)
    assert any(r.reused for r in rows)  # duplicates never met the screen: left out above

    assert report.evidence_ladder == ladder
    fronts = [e.payload for e in store.events(report.search_id) if e.kind == "front"]
    assert fronts[-1]["evidence_ladder"] == ladder  # the event of the last completion
    assert fronts[0]["evidence_ladder"][0]["tau"] is None  # one result: no tau yet
    assert readout.progress(spec, rows)["evidence_ladder"] == ladder  # the stored view
    resumed = Engine.resume(store, report.search_id, InProcessExecutor(HashedByStructure()))
    assert resumed.progress()["evidence_ladder"] == ladder  # rebuilt from the rows

    record = store.search(report.search_id)
    sent = convert.search_dict(convert.search_message(record, engine.progress()))["progress"]
    assert sent["evidence_ladder"] == ladder  # through GetSearch's message and back
    text = ladder_text(sent, digits=3)
    assert text.startswith(
        f"Kendall tau against {len(done)} screened, completed: params {params:.3f}"
    )
    zeroed = {t["tier"] for t in ladder if t["zero_weight"]}
    assert zeroed == set(engine.screen.zero_weight) - {"params"}  # the screen's own set
    assert f"ensemble {ensemble.statistic:.3f}" in text


def test_a_tier_is_compared_with_params_on_its_own_candidates():
    """naswot scored only candidates 0-4, where params ranks in reverse: it is not below params
    there, though params ranks all ten well (before the fix: compared with that, flagged)."""
    spec = make_spec(name="cascade", sampler="tpe", screen={"proxies": ["synflow", "naswot"]})
    params = [4.0, 3.0, 2.0, 1.0, 0.0, 10.0, 11.0, 12.0, 13.0, 14.0]
    naswot = [2.0, 1.0, 0.0, 3.0, 4.0]
    completed = [(n, {"accuracy": float(n), "params": p}) for n, p in enumerate(params)]
    scored = [
        (n, "proxy", {"proxy.synflow": float(n)} | ({"proxy.naswot": naswot[n]} if n < 5 else {}))
        for n in range(10)
    ]
    ladder = by_tier(readout.evidence_ladder(spec, completed, scored))
    everyone = stats.kendalltau(params, range(10)).statistic
    assert ladder["params"]["tau"] == pytest.approx(everyone) and everyone > 0.4
    assert ladder["naswot"]["tau"] == pytest.approx(0.4)
    naswot = ladder["naswot"]
    assert naswot["params_n"] == 5 and naswot["params_tau"] == pytest.approx(-1.0)
    assert not ladder["naswot"]["below_params"]


def test_a_measure_begun_before_a_result_arrives_is_not_cached_and_copies_are_returned():
    spec = make_spec(name="cascade", sampler="tpe", screen={"proxies": ["synflow"]})
    completed = [(n, {"accuracy": float(n), "params": float(n)}) for n in range(6)]
    scored = [(n, "proxy", {"proxy.synflow": float(n)}) for n in range(7)]
    ladder = EvidenceLadder.from_results(spec, completed, scored)
    measure = ladder._measure

    def racing(*args):  # the engine's thread adds a result while a watcher measures
        measured = measure(*args)
        ladder.completed(6, {"accuracy": 6.0, "params": 6.0})
        return measured

    ladder._measure = racing
    assert by_tier(ladder.measure())["params"]["n"] == 6
    ladder._measure = measure
    first = ladder.measure()
    assert by_tier(first)["params"]["n"] == 7  # the stale measure was not kept
    first[0]["tau"] = 99.0
    assert ladder.measure()[0]["tau"] != 99.0


def test_zero_weight_is_the_set_the_screens_latest_calibrated_fit_zeroed():
    """The screen fits on the labels it had then: its zeroed set (naswot) is shown as it is,
    though the ladder's own comparison flags synflow (before the fix: no such field)."""
    spec = make_spec(name="cascade", sampler="tpe", screen={"proxies": ["synflow", "naswot"]})
    completed = [(n, {"accuracy": float(n), "params": float(n)}) for n in range(6)]
    scored = []
    for n in range(6):
        proxy = {"proxy.synflow": -float(n), "proxy.naswot": float(n)}
        proxy |= {"screen.score": 0.0, "screen.calibrated": float(n >= 2)}
        zeroed = "synflow" if n == 2 else "naswot"
        scored.append((n, "proxy", proxy | ({f"screen.zero_weight.{zeroed}": 1.0} if n else {})))
    scored[0], scored[5] = scored[5], scored[0]  # rows may come in any order: the latest counts
    ladder = by_tier(readout.evidence_ladder(spec, completed, scored))
    assert ladder["synflow"]["below_params"] and not ladder["synflow"]["zero_weight"]
    assert ladder["naswot"]["zero_weight"] and not ladder["naswot"]["below_params"]
    assert not ladder["params"]["zero_weight"] and not ladder["ensemble"]["zero_weight"]
