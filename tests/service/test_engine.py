"""The engine end to end, with a deterministic stand-in for training and proxies so that every
decision (promotion, screening, reuse, constraints, resume) can be checked exactly."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from optuna.trial import TrialState

from winnow.records import front_note
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.api import convert
from winnow.service.engine import Engine, readout
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import Executor, InProcessExecutor
from winnow.workers.run import run_trial

SPACE = {
    "architecture": {
        "family": "mlp",
        "depth": [1, 2, 3],
        "width": [16, 32, 64, 128],
        "activation": "relu",
    },
    "optimizer": {"name": "adamw", "lr": 0.001, "batch_size": 64},
}


class FakeWorld:
    """Accuracy grows with width, depth and epochs; proxies see width and depth. Counts calls."""

    def __init__(self, fail_widths: tuple[int, ...] = ()):
        self.calls: Counter[tuple[str, str, int]] = Counter()
        self.fail_widths = fail_widths

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        arch = spec.candidate.architecture
        width, depth = arch["width"], arch["depth"]
        self.calls[(spec.stage, spec.candidate.key, spec.epochs)] += 1
        if spec.stage == "hash":  # the real functional hash: reuse depends on it
            return run_trial(spec)
        if width in self.fail_widths:
            raise RuntimeError("worker lost")
        params = float(width * depth * 100)
        if spec.stage == "proxy":
            return TrialResult(Status.OK, {"proxy.synflow": width * depth, "proxy.params": params})
        accuracy = 0.5 + width / 1000 + depth / 100 + spec.epochs / 1000
        return TrialResult(Status.OK, {"accuracy": accuracy, "params": params}, seconds=0.01)


def make_spec(**strategy):
    extra = strategy.pop("extra", {})
    strategy.setdefault("rungs", [1])
    return parse_search_spec(
        {
            "space": extra.pop("space", SPACE),
            "task": {"dataset": "digits"},
            "budget": extra.pop("budget", {"max_trials": 6}),
            "strategy": strategy,
            "seed": 0,
            **extra,
        }
    )


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "engine.db"))


def run(spec, store, world):
    engine = Engine.create(spec, store, InProcessExecutor(world))
    return engine, engine.run()


def test_random_search_trains_its_budget_and_stores_everything(store):
    engine, report = run(make_spec(name="random"), store, FakeWorld())
    rows = store.trials(report.search_id)
    assert report.trained == 6 and len(rows) == 6
    assert all(r.status == "ok" and r.stage == "train" for r in rows)
    best = max(r.metrics["accuracy"] for r in rows)
    assert report.front[0]["accuracy"] == best and report.hypervolume == pytest.approx(best)
    assert store.search(report.search_id).status == "finished"
    kinds = [e.kind for e in store.events(report.search_id)]
    assert kinds[0] == "search_started" and kinds[-1] == "search_finished"
    assert len(engine.study.trials) == 6
    assert all(t.state == TrialState.COMPLETE for t in engine.study.trials)


def test_successive_halving_promotes_the_best_third(store):
    spec = make_spec(
        name="random", rungs=[1, 3], reduction_factor=3, extra={"budget": {"max_trials": 9}}
    )
    engine, report = run(spec, store, FakeWorld())
    rows = store.trials(report.search_id)
    low = [r for r in rows if r.epochs == 1]
    high = [r for r in rows if r.epochs == 3]
    # max_trials counts candidates: nine of them, and the promotions due after the ninth ran
    assert len(low) == 9 and len(high) == 3
    # each promotion continues its first rung's training: 2 more epochs, not 3 from scratch
    assert report.candidates == 9 and report.trained == 12 and report.epochs == 9 + 3 * 2
    for promoted in high:  # at promotion time it was in the top third of the rung below
        earlier = [r for r in low if r.id < promoted.id]
        accuracy = {r.number: r.metrics["accuracy"] for r in earlier}
        ranked = sorted(accuracy, key=lambda n: -accuracy[n])
        assert promoted.number in ranked[: len(ranked) // 3]
    completed = [t for t in engine.study.trials if t.state == TrialState.COMPLETE]
    assert len(completed) == len({r.number for r in high})


def test_cascade_screens_with_proxies_and_tells_the_sampler(store):
    spec = make_spec(
        name="cascade",
        sampler="random",
        screen={"proxies": ["synflow", "params"], "keep_fraction": 0.3, "min_population": 3},
    )
    engine, report = run(spec, store, FakeWorld())
    proxy_rows = [r for r in store.trials(report.search_id) if r.stage == "proxy"]
    pruned = [r for r in proxy_rows if r.status == "pruned"]
    assert report.pruned == len(pruned) > 0 and report.trained == 6
    assert all("screen.score" in r.metrics for r in pruned)
    assert all("proxy screen" in r.error for r in pruned)
    states = Counter(t.state for t in engine.study.trials)
    assert states[TrialState.PRUNED] == len(pruned)


def test_the_sampler_sees_the_newest_screened_out_trials_and_resume_rebuilds_that(store):
    screen = {"proxies": ["synflow", "params"], "keep_fraction": 0.3, "min_population": 3}
    spec = make_spec(name="cascade", sampler="tpe", screen=screen, pruned_window=2)
    engine, report = run(spec, store, FakeWorld())
    pruned = [r.number for r in store.trials(report.search_id) if r.status == "pruned"]
    assert len(pruned) > 2  # all stored and told ...

    def seen(engine):
        return [t.number for t in engine.study.trials if t.state == TrialState.PRUNED]

    assert len(seen(engine)) == 2  # ... the sampler sees the newest two
    resumed = Engine.resume(store, report.search_id, InProcessExecutor(FakeWorld()))
    assert seen(resumed) == seen(engine)
    assert len(resumed.study.trials) == len(engine.study.trials)


def test_results_are_reused_by_hash_within_and_across_searches(store):
    tiny = {**SPACE, "architecture": {**SPACE["architecture"], "depth": 1, "width": [16, 32]}}
    extra = {"space": tiny, "budget": {"max_trials": 5, "max_proposals": 8}}
    world = FakeWorld()
    spec = make_spec(name="cascade", sampler="random", extra=dict(extra))
    _, first = run(spec, store, world)
    assert first.trained <= 2 and first.cache_hits == first.proposals - first.trained
    _, second = run(make_spec(name="cascade", sampler="random", extra=dict(extra)), store, world)
    assert second.trained == 0 and second.cache_hits == second.proposals == 8
    assert max(n for (stage, _, _), n in world.calls.items() if stage == "train") == 1


class DeadWeightWorld(FakeWorld):
    """As FakeWorld, but the costs stage sees 7 more parameters than training reported: what a
    functionally equal candidate with dead weights looks like to a reused result."""

    def __call__(self, spec: TrialSpec, on_epoch=None) -> TrialResult:
        result = super().__call__(spec)
        if spec.stage == "costs":
            return TrialResult(Status.OK, {"params": result.metrics["params"] + 7})
        return result


def test_a_reused_result_carries_the_candidates_own_costs(store):
    tiny = {**SPACE, "architecture": {**SPACE["architecture"], "depth": 1, "width": [16, 32]}}
    extra = {"space": tiny, "budget": {"max_trials": 5, "max_proposals": 8}}
    world = DeadWeightWorld()
    _, report = run(make_spec(name="cascade", sampler="random", extra=extra), store, world)
    duplicates = [r for r in store.trials(report.search_id) if r.status == "duplicate"]
    assert duplicates and report.cache_hits == len(duplicates)
    for row in duplicates:
        metrics, width = row.metrics, json.loads(row.candidate)
        width = width["architecture"]["width"]
        assert metrics["params"] == width * 100 + 7  # measured for this candidate
        assert metrics["accuracy"] == pytest.approx(0.5 + width / 1000 + 0.01 + 0.001)
    costs_runs = sum(n for (stage, _, _), n in world.calls.items() if stage == "costs")
    assert costs_runs <= 2  # once per candidate, then cached


def test_constraints_prune_at_the_first_fidelity_that_knows(store):
    world = FakeWorld()
    extra = {"constraints": ["params <= 3200"]}
    _, plain = run(make_spec(name="random", extra=dict(extra)), store, world)
    violating = [r for r in store.trials(plain.search_id) if r.status == "pruned"]
    assert violating and all(r.stage == "train" and "violates" in r.error for r in violating)
    _, cascade = run(
        make_spec(name="cascade", sampler="random", screen={"proxies": ["params"]}, extra=extra),
        store,
        world,
    )
    rows = store.trials(cascade.search_id)
    assert any(r.stage == "proxy" and "violates params" in (r.error or "") for r in rows)
    trained = [r.metrics for r in rows if r.stage == "train"]
    assert all(m["params"] <= 3200 for m in trained)


def test_failed_trials_are_recorded_and_the_search_goes_on(store):
    engine, report = run(make_spec(name="random"), store, FakeWorld(fail_widths=(32, 64)))
    rows = store.trials(report.search_id)
    failed = [r for r in rows if r.status == "failed"]
    assert failed and all("worker lost" in r.error for r in failed)
    assert report.trained == 6 and any(r.status == "ok" for r in rows)
    assert Counter(t.state for t in engine.study.trials)[TrialState.FAIL] == len(failed)


def test_resume_keeps_finished_trials_and_reruns_only_the_running_one(store):
    world = FakeWorld()
    spec = make_spec(name="tpe", extra={"budget": {"max_trials": 8}})
    spec_small = spec.model_copy(
        update={"budget": spec.budget.model_copy(update={"max_trials": 4})}
    )
    _, report = run(spec_small, store, world)
    rows = store.trials(report.search_id)
    store.update_trial(rows[-1].id, status="running")  # as if killed while training it
    # the stored spec is the one resumed: give it the larger budget
    with store.writing() as session:
        from winnow.service.store.tables import SearchRow

        session.get(SearchRow, report.search_id).spec_json = spec.to_json()
    before = {r.id: (r.status, r.metrics) for r in rows[:-1]}
    engine = Engine.resume(store, report.search_id, InProcessExecutor(world))
    assert len(engine.study.trials) == 4 and engine.state.requeued
    resumed = engine.run()
    after = store.trials(report.search_id)
    assert {r.id: (r.status, r.metrics) for r in after if r.id in before} == before
    assert resumed.trained == 8 and len(after) == 8
    assert world.calls[("train", rows[-1].candidate_key, 1)] >= 2  # the interrupted one re-ran
    assert all(r.status == "ok" for r in after)


def test_resume_rebuilds_the_cascade_screen_and_its_cache_use(store):
    world = FakeWorld()
    screen = {"proxies": ["synflow", "params"], "keep_fraction": 0.5, "min_population": 2}
    spec = make_spec(
        name="cascade", sampler="tpe", screen=screen, extra={"budget": {"max_trials": 4}}
    )
    _, report = run(spec, store, world)
    rows = store.trials(report.search_id)
    scored = [r for r in rows if r.stage == "proxy"]
    engine = Engine.resume(store, report.search_id, InProcessExecutor(world))
    assert len(engine.screen.rows) == len(scored)
    assert engine.counts["trained"] == 4 and engine.counts["proposals"] == report.proposals
    assert len(engine.study.trials) == report.proposals
    proxy_calls = sum(n for (stage, _, _), n in world.calls.items() if stage == "proxy")
    resumed = engine.run()  # the budget is spent: nothing runs again
    assert resumed.trained == 4
    assert sum(n for (stage, _, _), n in world.calls.items() if stage == "proxy") == proxy_calls


@pytest.mark.parametrize("sampler", ["random", "tpe", "nsga2", "gp"])
def test_every_sampler_drives_a_two_objective_search(store, sampler):
    objectives = [{"name": "accuracy"}, {"name": "params", "direction": "minimize"}]
    spec = make_spec(name=sampler, extra={"objectives": objectives, "budget": {"max_trials": 4}})
    engine, report = run(spec, store, FakeWorld())
    assert report.trained == 4 and report.front and report.hypervolume > 0
    assert all(len(t.values) == 2 for t in engine.study.trials)


def test_a_search_in_which_every_trial_failed_ends_failed_with_the_commonest_error(store):
    world = FakeWorld(fail_widths=(16, 32, 64, 128))  # every candidate's worker dies
    engine, report = run(make_spec(name="random"), store, world)
    search = store.search(report.search_id)
    assert report.status == search.status == "failed"
    assert (
        search.error
        == "no trial trained successfully; 6 of 6 failed rows: RuntimeError: worker lost"
    )
    events = store.events(report.search_id)
    assert events[-1].kind == "search_finished" and events[-1].payload["status"] == "failed"


def test_one_successful_trial_is_enough_for_a_finished_search(store):
    engine, report = run(make_spec(name="random"), store, FakeWorld(fail_widths=(16, 32, 64)))
    search = store.search(report.search_id)
    assert any(r.status == "failed" for r in store.trials(report.search_id))
    assert search.status == "finished" and search.error is None


# --- budgets of candidates and epochs; fronts below the top rung (issue 15, item 3) -------------


def test_a_small_budget_finishes_with_a_front_at_the_highest_rung_reached(store):
    """Three candidates on rungs [1, 3, 9]: one is promoted to 3 epochs, none reaches 9. The
    front is the 3-epoch rung's, says so, and every trained trial can be exported."""
    spec = make_spec(name="random", rungs=[1, 3, 9], extra={"budget": {"max_trials": 3}})
    engine, report = run(spec, store, FakeWorld())
    rows = store.trials(report.search_id)
    assert store.search(report.search_id).status == "finished"
    assert report.candidates == 3 and report.trained == 4  # the due promotion ran past 3
    assert (report.front_epochs, report.top_epochs) == (3, 9) and len(report.front) == 1
    promoted = next(r.number for r in rows if r.rung == 1)
    assert report.front[0]["trial_id"] == promoted
    assert (
        engine.progress()["best"]["accuracy"]
        == next(r for r in rows if r.rung == 1).metrics["accuracy"]
    )

    front = readout.pareto(spec, rows)
    assert (front["epochs"], front["top_epochs"]) == (3, 9)
    assert [p["trial_id"] for p in front["points"]] == [promoted]
    assert front["hypervolume"] == pytest.approx(report.hypervolume) and front["hypervolume"] > 0
    message = convert.front_message(front)  # what GetParetoFront sends, as the client reads it
    assert convert.front_dict(message)["epochs"] == 3
    assert front_note(3, 9) == "front at 3 epochs (top rung 9 never reached)"

    search = store.search(report.search_id)
    best = readout.recipe(search, rows)  # the default: the front's best
    assert best["trial_id"] == promoted and best["training"]["epochs"] == 3
    first_rung_only = next(r.number for r in rows if r.number != promoted)
    recipe = readout.recipe(search, rows, first_rung_only)
    assert recipe["trial_id"] == first_rung_only and recipe["training"]["epochs"] == 1
    with pytest.raises(readout.UnknownTrialError, match="trial 7 .* does not exist"):
        readout.recipe(search, rows, 7)
    resumed = Engine.resume(store, report.search_id, InProcessExecutor(FakeWorld()))
    assert resumed.counts == engine.counts and resumed.front() == report.front
    assert resumed.run().trained == 4  # its budget is spent: nothing more runs


def test_export_says_why_a_trial_has_no_trained_result(store):
    spec = make_spec(name="random", extra={"budget": {"max_trials": 3}})
    _, report = run(spec, store, FakeWorld(fail_widths=(16, 32, 64, 128)))
    search, rows = store.search(report.search_id), store.trials(report.search_id)
    with pytest.raises(readout.UnknownTrialError, match="failed at rung 0 .*: worker lost"):
        readout.recipe(search, rows, 0)
    refused = r"\(failed\) has no trained trial to export: "  # ended: no "yet"
    with pytest.raises(readout.UnknownTrialError, match=refused):
        readout.recipe(search, rows)


@pytest.mark.parametrize("continued", [False, True])
def test_max_trials_counts_candidates_and_max_epochs_caps_the_compute(store, continued):
    """Without an epoch cap, nine candidates and their three promotions train 9 + 3 x 3 epochs
    from scratch (9 + 3 x 2 continued); with ``max_epochs: 10`` no run starts that would go
    past 10 epochs in all."""
    budget = {"max_trials": 9}
    rungs = {"rungs": [1, 3], "continue_rungs": continued}
    _, free = run(make_spec(name="random", **rungs, extra={"budget": budget}), store, FakeWorld())
    assert (free.candidates, free.trained, free.epochs) == (9, 12, 15 if continued else 18)
    capped = make_spec(name="random", **rungs, extra={"budget": budget | {"max_epochs": 10}})
    engine, report = run(capped, store, FakeWorld())
    rows = [r for r in store.trials(report.search_id) if r.stage == "train"]
    epochs = sum(r.metrics["epochs_run"] for r in rows)  # a continued rung ran its own
    starts = [0, 1] if continued else [0, 0]  # the epoch each rung's run starts from
    assert epochs == sum(r.epochs - starts[r.rung] for r in rows)
    assert report.epochs == epochs == 10  # a promotion (3) no longer fitted, a candidate did
    assert readout.progress(capped, store.trials(report.search_id))["epochs"] == epochs
    assert engine.progress()["candidates"] == report.candidates < 9


# --- reproducible runs (issue 15, item 6) ------------------------------------------------------


class ShuffledThreads(Executor):
    """``world`` on three threads, each trial sleeping a random while first: results come
    back in an order that changes from run to run, as a pool of workers' do."""

    slots = 3

    def __init__(self, world: FakeWorld, seed: int) -> None:
        self.world, self.rng = world, random.Random(seed)
        self.pool = ThreadPoolExecutor(self.slots)

    def submit(self, spec: TrialSpec, on_epoch=None):
        delay = self.rng.uniform(0.0, 0.01)
        return self.pool.submit(lambda: (time.sleep(delay), self.world(spec, on_epoch))[1])

    def close(self) -> None:
        self.pool.shutdown()


def test_reproducible_runs_give_identical_fronts_on_one_store(store):
    screen = {"proxies": ["synflow", "params"], "keep_fraction": 0.5, "min_population": 3}
    objectives = [{"name": "accuracy"}, {"name": "params", "direction": "minimize"}]
    extra = {"budget": {"max_trials": 6}, "objectives": objectives}
    spec = make_spec(name="cascade", sampler="tpe", rungs=[1, 3], screen=screen, extra=extra)
    _, first = run(spec, store, FakeWorld())
    _, again = run(spec, store, FakeWorld())  # by default the first run's results answer
    assert first.cache_hits == 0 and again.cache_hits > 0

    reproducible = spec.model_copy(update={"reproducible": True})
    fronts = []
    for seed in (1, 2):
        executor = ShuffledThreads(FakeWorld(), seed)
        engine = Engine.create(reproducible, store, executor)
        assert engine.slots == 1  # one training at a time, told before the next ask
        report = engine.run()
        executor.close()
        assert report.cache_hits == 0 and report.status == "finished"
        rows = store.trials(report.search_id)
        fronts.append((report.front, readout.pareto(reproducible, rows)["points"]))
    assert fronts[0] == fronts[1] and fronts[0][0]


def test_a_reused_result_that_violates_a_constraint_is_pruned_not_on_the_front(store):
    world = FakeWorld()
    extra = {"budget": {"max_trials": 6, "max_proposals": 12}}
    _, first = run(make_spec(name="cascade", sampler="random", extra=dict(extra)), store, world)
    constrained = {**extra, "constraints": ["params <= 3200"]}
    engine, second = run(
        make_spec(name="cascade", sampler="random", extra=constrained), store, world
    )
    rows = store.trials(second.search_id)
    reused = [r for r in rows if r.reused]
    violators = [r for r in reused if r.metrics["params"] > 3200]
    assert violators  # the first search's results answered, some over the limit
    assert all(r.status == "pruned" and "violates params <= 3200" in r.error for r in violators)
    assert all(r.status == "duplicate" for r in reused if r.metrics["params"] <= 3200)
    params = {r.number: r.metrics["params"] for r in rows if r.stage == "train"}
    assert second.front and all(params[point["trial_id"]] <= 3200 for point in second.front)
    assert second.cache_hits == len(reused) and second.pruned >= len(violators)
    states = {t.number: t.state for t in engine.study.trials}
    numbers = {r.number for r in violators}
    assert all(states[n] == TrialState.PRUNED for n in numbers if n in states)
    resumed = Engine.resume(store, second.search_id, InProcessExecutor(world))
    assert resumed.state.counts["pruned"] == engine.state.counts["pruned"]
    assert set(resumed.state.completed) == set(engine.state.completed)


TRAINER = "winnow.search_space.training:fit"  # a task.trainer path (winnow's loop, named)


@pytest.mark.parametrize(("first", "second"), [(None, TRAINER), (TRAINER, None)])
def test_a_task_trainers_results_and_winnows_loops_are_not_reused_for_each_other(
    store, first, second
):
    """Trained results are cached under ``Task.training_key``: a search with a ``task.trainer``
    trains what a search with winnow's loop already trained (another loop, another network),
    and the other way round, while each reuses its own kind's results."""
    tiny = {**SPACE, "architecture": {**SPACE["architecture"], "depth": 1, "width": [16, 32]}}
    world = FakeWorld()

    def search(trainer: str | None):
        spec = make_spec(
            name="cascade",
            sampler="random",
            reuse_across_searches=True,
            extra={"space": tiny, "budget": {"max_trials": 2, "max_proposals": 4}},
        )
        task = spec.task.model_copy(update={"trainer": trainer})
        _, report = run(spec.model_copy(update={"task": task}), store, world)
        rows = [r for r in store.trials(report.search_id) if r.stage == "train"]
        return report, [r for r in rows if r.status == "duplicate" or r.reused]

    search(first)
    report, reused = search(second)
    assert report.trained > 0 and report.cache_hits == 0 and not reused
    report, reused = search(second)  # its own kind's results are reused
    assert report.trained == 0 and reused
