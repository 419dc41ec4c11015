"""The cascade as a list of stages: its order, the passage's transactions, a supernet stage
plugged into the slot (honoured by the engine and by the Ray Tune searcher), and the search
state rebuilt from the stored rows equal to the live one."""

from __future__ import annotations

import json

import pytest
import torch

from winnow.search_space import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.costs import count_parameters
from winnow.search_space.functional_hash import functional_hash
from winnow.search_space.spec import parse_space
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine import Engine
from winnow.service.engine.cascade import Passage, Proposal
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.engine.sampling import SamplerViewStorage, make_study
from winnow.service.engine.state import SearchState
from winnow.service.engine.tune_searcher import WinnowSearcher
from winnow.service.search_spec import Screen, parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import InProcessExecutor
from winnow.workers.run import run_trial

SCREEN = {"proxies": ["synflow", "params"], "keep_fraction": 0.5, "min_population": 3}
SPACE = {
    "architecture": {"family": "mlp", "depth": [1, 2, 3], "width": [16, 32, 64, 128]},
    "optimizer": {"name": "adamw", "lr": 0.001, "batch_size": 64},
}


class FakeWorld:
    """Accuracy grows with width, depth and epochs; proxies see width and depth (as in
    test_engine); ``fail_widths`` fail their training."""

    def __init__(self, fail_widths: tuple[int, ...] = ()):
        self.fail_widths = fail_widths

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        width, depth = spec.candidate.architecture["width"], spec.candidate.architecture["depth"]
        if spec.stage == "hash":  # the real functional hash: reuse depends on it
            return run_trial(spec)
        if spec.stage == "proxy":
            return TrialResult(Status.OK, {"proxy.synflow": width * depth, "proxy.params": width})
        if width in self.fail_widths:
            return TrialResult(Status.FAILED, error="worker lost")
        accuracy = 0.5 + width / 1000 + depth / 100 + spec.epochs / 1000
        return TrialResult(Status.OK, {"accuracy": accuracy}, seconds=0.01)


def make_spec(extra: dict | None = None, **strategy):
    strategy.setdefault("rungs", [1])
    data = {"space": SPACE, "task": {"dataset": "digits"}, "budget": {"max_trials": 6}}
    return parse_search_spec({**data, "strategy": strategy, "seed": 0, **(extra or {})})


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "cascade.db"))


class RejectWide:
    """A supernet stage that stops every candidate wider than 32."""

    name = "supernet"

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, proposal: Proposal, passage: Passage) -> bool:
        self.seen += 1
        if proposal.candidate.architecture["width"] <= 32:
            return True
        verdict = TrialResult(Status.PRUNED, error="supernet: too wide")
        passage.outcomes.screened(proposal, self.name, verdict)
        return False


def test_the_stage_lists_in_order(store):
    cascade = Engine.create(
        make_spec(name="cascade", sampler="random"), store, InProcessExecutor(FakeWorld())
    )
    names = [stage.name for stage in cascade.stages]
    assert names == ["hash", "reuse", "proxy", "screen", "supernet", "train"]
    plain = Engine.create(make_spec(name="tpe"), store, InProcessExecutor(FakeWorld()))
    assert [stage.name for stage in plain.stages] == ["train"]


def test_evaluations_run_outside_the_transaction_and_are_timed():
    log = []

    class Transaction:
        def __enter__(self):
            log.append("begin")

        def __exit__(self, *error):
            log.append("rollback" if error[0] else "commit")

    passage = Passage(outcomes=None, transaction=Transaction)
    with passage:
        log.append("write")
        assert passage.evaluate(lambda: log.append("evaluate") or 7) == 7
        log.append("write")
    assert log == ["begin", "write", "commit", "evaluate", "begin", "write", "commit"]
    assert passage.evaluation > 0


def test_a_supernet_stage_that_rejects_is_honoured_by_the_engine(store):
    world, supernet = FakeWorld(), RejectWide()
    spec = make_spec(name="cascade", sampler="random", screen=SCREEN, pruned_window=None)
    engine = Engine.create(spec, store, InProcessExecutor(world), supernet=supernet)
    report = engine.run()
    rows = store.trials(report.search_id)
    rejected = [r for r in rows if r.stage == "supernet"]
    assert rejected and all(r.status == "pruned" and "too wide" in r.error for r in rejected)
    widths = {json.loads(r.candidate)["architecture"]["width"] for r in rows if r.stage == "train"}
    assert widths and max(widths) <= 32  # nothing the supernet stopped was trained
    kept = [r for r in rows if r.stage == "proxy" and r.status == "ok"]
    assert supernet.seen == len(kept)  # after the proxy screen, before training
    assert report.pruned == sum(r.status == "pruned" for r in rows)
    told = {t.number: t.state.name for t in engine.study.trials}
    assert all(told[engine.tracked[r.number].optuna_number] == "PRUNED" for r in rejected)
    resumed = Engine.resume(store, report.search_id, InProcessExecutor(world))
    assert resumed.counts["pruned"] == report.pruned and not resumed.state.requeued


def test_a_supernet_stage_that_rejects_is_honoured_by_the_tune_searcher():
    space = parse_space(
        {"name": "wide", "architecture": {"family": "mlp", "depth": 1, "width": [16, 32, 64, 128]}}
    )
    screen = Screen(proxies=["params"], keep_fraction=1.0, min_population=1)
    supernet = RejectWide()
    searcher = WinnowSearcher(space, "digits", screen=screen, max_attempts=20, supernet=supernet)
    suggested = [searcher.suggest(f"t{i}") for i in range(2)]
    assert all(s["candidate"]["architecture"]["width"] <= 32 for s in suggested)
    assert supernet.seen > 2 and searcher.counts["screened_out"] == supernet.seen - 2
    assert searcher.suggest("t2") is None  # only wide ones left, and two trials still run


def rebuilt(engine: Engine, store: Store) -> SearchState:
    spec = engine.spec
    storage = SamplerViewStorage()
    return SearchState.from_rows(
        store.trials(engine.search_id),
        engine.space,
        engine.objectives,
        SuccessiveHalving(spec.strategy.rungs, spec.strategy.reduction_factor, spec.directions),
        None,
        make_study("random", spec.directions, 0, storage=storage),
        storage,
    )


def assert_same_state(live: SearchState, again: SearchState, except_counts=()) -> None:
    assert again.tracked == live.tracked
    assert {k: v for k, v in again.counts.items() if k not in except_counts} == {
        k: v for k, v in live.counts.items() if k not in except_counts
    }
    assert again.completed == live.completed and again.requeued == live.requeued
    assert again.device_seconds == pytest.approx(live.device_seconds)
    assert again.hypervolume == pytest.approx(live.hypervolume)


def test_the_state_rebuilt_from_rows_equals_the_live_state(store):
    spec = make_spec(
        name="random", rungs=[1, 3], reduction_factor=3, extra={"budget": {"max_trials": 9}}
    )
    engine = Engine.create(spec, store, InProcessExecutor(FakeWorld(fail_widths=(128,))))
    engine.run()
    assert engine.counts["failed"] and any(r.rung == 1 for r in store.trials(engine.search_id))
    assert_same_state(engine.state, rebuilt(engine, store))


def test_a_cascade_state_rebuilt_from_rows_equals_the_live_state(store):
    spec = make_spec(name="cascade", sampler="tpe", screen=SCREEN)
    engine = Engine.create(spec, store, InProcessExecutor(FakeWorld()))
    engine.run()
    assert engine.counts["pruned"] and engine.counts["proxy"]
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(FakeWorld()))
    # proxy runs are not in the rows (a cached score leaves the same row as a computed one)
    assert_same_state(engine.state, resumed.state, except_counts=("proxy",))
    assert resumed.counts["proxy"] == 0


class RecordingWorld(FakeWorld):
    """As FakeWorld, recording the stage of every trial it is sent; ``fail_hashes`` makes
    every hash trial fail, as a worker that died would."""

    def __init__(self, fail_hashes: bool = False) -> None:
        super().__init__()
        self.stages: list[str] = []
        self.fail_hashes = fail_hashes

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        self.stages.append(spec.stage)
        if spec.stage == "hash" and self.fail_hashes:
            return TrialResult(Status.FAILED, error="worker lost")
        return super().__call__(spec, on_epoch)


def hashed_rows(store: Store, search_id: str) -> dict[str, str]:
    """Each stored candidate's functional hash, by its canonical JSON."""
    return {r.candidate: r.functional_hash for r in store.trials(search_id)}


def test_the_engine_hashes_in_its_executors_workers(store, monkeypatch):
    def no_hashing_here(*args, **kwargs):
        raise AssertionError("the engine hashed in its own process")

    monkeypatch.setattr("winnow.service.engine.cascade.functional_hash", no_hashing_here)
    world = RecordingWorld()
    engine = Engine.create(
        make_spec(name="cascade", sampler="random"), store, InProcessExecutor(world)
    )
    engine.run()
    distinct = {t.structural for t in engine.tracked.values()}
    assert world.stages.count("hash") == len(distinct)  # once per structure, then memoised
    for canonical, functional in hashed_rows(store, engine.search_id).items():
        candidate = next(
            t.candidate
            for t in engine.tracked.values()
            if t.candidate.canonical_json() == canonical
        )
        assert functional == functional_hash(candidate)  # the same function, the same probe


def test_a_failed_hash_trial_falls_back_to_the_structural_hash_and_the_search_goes_on(store):
    world = RecordingWorld(fail_hashes=True)
    engine = Engine.create(
        make_spec(name="cascade", sampler="random"), store, InProcessExecutor(world)
    )
    report = engine.run()
    assert report.trained > 0 and "hash" in world.stages
    for tracked in engine.tracked.values():
        assert tracked.functional == "s" + structural_hash(tracked.candidate)[1:]
    # not memoised: the next search asks the workers again
    again = RecordingWorld()
    Engine.create(
        make_spec(name="cascade", sampler="random"), store, InProcessExecutor(again)
    ).run()
    assert "hash" in again.stages


def parameters(candidate: Candidate) -> int:
    """The parameters of the candidate's network on the digits, counted on a real build."""
    return count_parameters(candidate.build_model(10, (64,)))


def test_a_candidate_over_the_size_cap_fails_unbuilt_and_never_reaches_the_executor(
    store, monkeypatch
):
    builds: list[tuple[str, str]] = []  # (candidate key, device) of every network built
    build = Candidate.build_model

    def recording_build(self, *args, **kwargs):
        builds.append((self.key, str(torch.empty(0).device)))
        return build(self, *args, **kwargs)

    monkeypatch.setattr(Candidate, "build_model", recording_build)
    sent: list[tuple[str, str]] = []  # (stage, candidate key) of every trial
    world = RecordingWorld()

    def recording(spec, on_epoch=None):
        sent.append((spec.stage, spec.candidate.key))
        return world(spec, on_epoch)

    cap = 5_000  # the narrow shallow networks fit, the deeper ones do not
    spec = make_spec(name="cascade", sampler="random", extra={"budget": {"max_proposals": 12}})
    engine = Engine.create(spec, store, InProcessExecutor(recording), max_params=cap)
    report = engine.run()
    monkeypatch.undo()
    counts = {t.number: parameters(t.candidate) for t in engine.tracked.values()}
    over = [t for t in engine.tracked.values() if counts[t.number] > cap]
    assert over and report.failed == len(over) and report.trained > 0
    rows = {r.number: r for r in store.trials(engine.search_id) if r.stage == "costs"}
    assert set(rows) == {t.number for t in over}
    for tracked in over:
        row = rows[tracked.number]
        assert row.status == "failed" and row.metrics["params"] == counts[tracked.number]
        assert row.error == f"{counts[tracked.number]:,} parameters, over the server's cap of 5,000"
        assert tracked.candidate.key not in {key for _, key in sent}  # no hash, proxy, train
        assert {device for key, device in builds if key == tracked.candidate.key} == {"meta"}
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(world), max_params=cap)
    assert resumed.counts["failed"] == report.failed and not resumed.state.requeued
