"""Confirmation of the front (``strategy.confirm``): the spec field, the engine's runs (stored,
resumed without redoing any), the figures and the front they give, over the wire and the CLI."""

from __future__ import annotations

import json
import statistics
from collections import Counter

import pytest
import yaml
from scipy import stats

from winnow.records import SearchRecord, SearchStatus, Status, TrialRecord, confirm_seed
from winnow.search_space.specfile import SpecError
from winnow.search_space.trial import TrialResult
from winnow.service import demo
from winnow.service.api.server import SharedExecutor
from winnow.service.cli import main
from winnow.service.engine import Engine, readout
from winnow.service.engine.confirmation import check_executor
from winnow.service.engine.confirmed import confirm_seeds, confirmed_figures, to_confirm
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.workers.executor import InProcessExecutor
from winnow.workers.oracle import NB201Oracle

from .test_engine import SPACE, FakeWorld

pytestmark = pytest.mark.usefixtures("one_thread")

TWO_OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "params", "direction": "minimize"},
]


def spec_of(confirm=None, max_trials=6, seed=0, objectives=TWO_OBJECTIVES, **extra):
    strategy = {"name": "random", "rungs": [1]}
    if confirm is not None:
        strategy["confirm"] = confirm
    return parse_search_spec(
        {
            "space": SPACE,
            "task": {"dataset": "digits"},
            "objectives": objectives,
            "budget": {"max_trials": max_trials},
            "strategy": strategy,
            "seed": seed,
            **extra,
        }
    )


def t_bound(values, direction):
    """The one-sided 95 % Student-t bound on the bad side of the mean, computed here."""
    half = stats.t.ppf(0.95, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    mean = statistics.mean(values)
    return mean - half if direction == "maximize" else mean + half


class SeededWorld(FakeWorld):
    """The engine tests' world, whose accuracy moves with the training seed; counts the
    confirmation runs by (candidate, seed)."""

    def __init__(self) -> None:
        super().__init__()
        self.seeds: Counter[tuple[str, int]] = Counter()

    def __call__(self, spec, on_epoch=None) -> TrialResult:
        result = super().__call__(spec, on_epoch)
        if spec.stage == "train":
            self.seeds[(spec.candidate.key, spec.seed)] += 1
            result.metrics["accuracy"] += (spec.seed % 7) / 100
        return result


class CostlySeedWorld(SeededWorld):
    """A further seed makes a network larger (``params``, minimised, moves with the seed too)
    and, with ``worse``, less accurate: a recipe's confirmed mean falls below single runs."""

    def __init__(self, worse: float = 0.0) -> None:
        super().__init__()
        self.worse = worse

    def __call__(self, spec, on_epoch=None) -> TrialResult:
        result = super().__call__(spec, on_epoch)
        if spec.stage == "train" and spec.seed != 0:
            result.metrics["params"] += 10.0 * spec.seed
            result.metrics["accuracy"] -= self.worse
        return result


class Crash(BaseException):
    """A process dying mid-confirmation (not an Exception: nothing records it as a trial)."""


class CrashingWorld(SeededWorld):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def __call__(self, spec, on_epoch=None) -> TrialResult:
        confirming = spec.stage == "train" and spec.seed != 0
        if confirming and sum(n for (_, s), n in self.seeds.items() if s != 0) >= self.after:
            raise Crash
        return super().__call__(spec, on_epoch)


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "confirm.db"))


def confirm_rows(rows):
    return [r for r in rows if confirm_seed(r.stage) is not None]


# --- the spec field ---------------------------------------------------------------------------


def test_confirm_is_off_unless_given_and_an_empty_mapping_takes_the_defaults():
    assert spec_of().strategy.confirm is None
    confirm = spec_of({}).strategy.confirm
    assert (confirm.top_k, confirm.seeds) == (5, 3)
    assert confirm_seeds(spec_of({"seeds": 4}, seed=7)) == [8, 9, 10, 11]  # never the spec's own


@pytest.mark.parametrize(
    ("confirm", "field"),
    [({"seeds": 1}, "strategy.confirm.seeds"), ({"top_k": 0}, "strategy.confirm.top_k")],
)
def test_confirm_settings_are_validated_naming_the_field(confirm, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        spec_of(confirm)


def oracle_of(tmp_path):
    csv = tmp_path / "truth.csv"
    cell = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
    cell += "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    csv.write_text(f"arch,test_accuracy\n{cell},85.9\n")
    return NB201Oracle(csv)


def test_an_oracle_search_refuses_confirmation_before_it_is_stored(store, tmp_path):
    oracle = oracle_of(tmp_path)
    with pytest.raises(SpecError, match=r"strategy\.confirm.*table"):
        Engine.create(spec_of({}), store, oracle)
    assert store.searches() == []
    check_executor(spec_of(), oracle)  # without confirmation an oracle is fine


def test_the_fronts_recipes_are_confirmed_once_each():
    spec = spec_of({"top_k": 3})
    ids, keys = [10, 11, 12, 13], ["a", "a", "b", "c"]  # 11 is 10's recipe again
    points = [[0.9, 200.0], [0.9, 200.0], [0.8, 100.0], [0.7, 50.0]]
    assert sorted(to_confirm(spec, ids, points, keys)) == [10, 12, 13]  # 11: 10's, no slot
    assert to_confirm(spec_of({"top_k": 1}), ids, points, keys) == [10]  # the best accuracy
    assert to_confirm(spec_of(), ids, points, keys) == []  # off


def test_top_k_of_a_two_objective_front_takes_its_ends_then_its_most_isolated_points():
    """A front from accurate-but-large to small-but-rough: top_k 3 confirms both ends (each
    objective's best) and then the point with the widest gap around it, not the three most
    accurate recipes (which would leave every small recipe a single run)."""
    ids = [0, 1, 2, 3, 4, 5, 6]
    accuracy = [0.95, 0.94, 0.93, 0.92, 0.80, 0.70, 0.60]
    params = [900.0, 800.0, 700.0, 600.0, 300.0, 200.0, 100.0]
    points = [[a, p] for a, p in zip(accuracy, params, strict=True)]
    points.append([0.50, 950.0])  # dominated: never confirmed
    ids.append(7)
    keys = [f"r{n}" for n in ids]
    spread = to_confirm(spec_of({"top_k": 3}), ids, points, keys)
    assert spread[:2] == [0, 6]  # the ends, the most accurate first
    # the third: the largest normalised gap between its neighbours, computed here
    gaps = {
        n: (accuracy[n - 1] - accuracy[n + 1]) / 0.35 + (params[n - 1] - params[n + 1]) / 800
        for n in range(1, 6)
    }
    assert spread[2] == max(gaps, key=gaps.get) == 4
    assert 7 not in to_confirm(spec_of({"top_k": 8}), ids, points, keys)
    # with the first objective minimised the ends come smallest first
    flipped = spec_of({"top_k": 2}, objectives=list(reversed(TWO_OBJECTIVES)))
    assert to_confirm(flipped, ids, [[p, a] for a, p in points], keys) == [6, 0]


# --- the engine -------------------------------------------------------------------------------


def test_the_engine_confirms_the_fronts_top_k_with_further_seeds(store):
    spec, world = spec_of({"top_k": 2, "seeds": 3}), CostlySeedWorld()
    engine = Engine.create(spec, store, InProcessExecutor(world))
    report = engine.run()
    assert report.status == SearchStatus.FINISHED
    rows = store.trials(engine.search_id)
    assert engine.progress()["confirm_runs"] == engine.progress()["confirm_done"] == 6
    singles = [r for r in rows if r.stage == "train"]
    recipes: dict[str, int] = {}  # the front's recipes by accuracy (twins once)
    for point in readout.pareto(spec, singles)["points"]:
        recipes.setdefault(engine.tracked[point["trial_id"]].candidate.key, point["trial_id"])
    runs = confirm_rows(rows)
    assert len(recipes) > 2  # a front to choose from
    ends = list(recipes.values())
    chosen = sorted([ends[0], ends[-1]])  # top_k 2: the most accurate and the smallest
    assert sorted({r.number for r in runs}) == chosen
    assert sorted(confirm_seed(r.stage) for r in runs) == sorted([1, 2, 3] * 2)
    assert all(r.status == Status.OK and r.epochs == 1 and r.rung == 0 for r in runs)
    kinds = [e.kind for e in store.events(engine.search_id)]
    assert kinds.index("confirm_started") < kinds.index("confirm_finished") < len(kinds) - 1
    shown = {p["trial_id"]: p for p in report.front}  # the engine's report: confirmed means
    for number in chosen:
        mine = [r for r in runs if r.number == number]
        accuracy = [r.metrics["accuracy"] for r in mine]
        params = [r.metrics["params"] for r in mine]
        figures = shown[number]["confirmed"]
        assert figures["seeds"] == 3 and shown[number]["params"] == statistics.mean(params)
        assert figures["accuracy"]["mean"] == pytest.approx(statistics.mean(accuracy))
        assert figures["accuracy"]["std"] == pytest.approx(statistics.stdev(accuracy))
        assert figures["accuracy"]["lower"] == pytest.approx(t_bound(accuracy, "maximize"))
        # a cost to minimise: its bound lies above the mean (the seeds move it here)
        assert figures["params"]["std"] == pytest.approx(statistics.stdev(params))
        assert figures["params"]["std"] > 0
        assert figures["params"]["lower"] == pytest.approx(t_bound(params, "minimize"))
        assert figures["params"]["lower"] > figures["params"]["mean"]


def test_a_front_larger_than_top_k_leads_and_exports_by_the_confirmed_mean(store):
    """The confirmed recipe's mean falls below the single runs of unconfirmed ones; the
    front's order, its leader (live and stored) and the export still choose the confirmed
    one, since a single run's value is no match for a mean."""
    spec, world = spec_of({"top_k": 1, "seeds": 3}), CostlySeedWorld(worse=0.2)
    engine = Engine.create(spec, store, InProcessExecutor(world))
    report = engine.run()
    rows = store.trials(engine.search_id)
    (confirmed,) = {r.number for r in confirm_rows(rows)}
    points = readout.pareto(spec, rows)["points"]
    assert points[0]["trial_id"] == confirmed
    singles = [p for p in points if "confirmed" not in p]  # the rest but the recipe's twins
    assert all(p["candidate"] == points[0]["candidate"] for p in points if "confirmed" in p)
    assert max(p["accuracy"] for p in singles) > points[0]["accuracy"]  # luckier singles
    assert report.front[0]["trial_id"] == confirmed
    mean = statistics.mean(r.metrics["accuracy"] for r in confirm_rows(rows))
    for progress in (engine.progress(), readout.progress(spec, rows)):
        assert progress["leader"]["trial_id"] == confirmed
        assert progress["leader"]["values"]["accuracy"] == pytest.approx(mean)
    search = store.search(engine.search_id)
    assert readout.recipe(search, rows)["trial_id"] == confirmed


def test_a_minimised_first_objective_confirms_and_orders_the_smallest_first(store):
    objectives = list(reversed(TWO_OBJECTIVES))  # params (minimise) first
    spec = spec_of({"top_k": 2, "seeds": 2}, objectives=objectives)
    engine = Engine.create(spec, store, InProcessExecutor(CostlySeedWorld()))
    engine.run()
    rows = store.trials(engine.search_id)
    singles = readout.pareto(spec, [r for r in rows if r.stage == "train"])["points"]
    ends = [min(p["params"] for p in singles), max(p["params"] for p in singles)]
    by_params = {p["params"]: p["trial_id"] for p in reversed(singles)}  # the earliest of equals
    assert len(by_params) > 2  # the front's two ends are confirmed, its middle not
    assert sorted({r.number for r in confirm_rows(rows)}) == sorted(by_params[v] for v in ends)
    points = readout.pareto(spec, rows)["points"]
    confirmed = [p for p in points if "confirmed" in p]
    assert [p["params"] for p in confirmed] == sorted(p["params"] for p in confirmed)
    for point in confirmed:  # a twin's figures are its recipe's
        mine = [r for r in confirm_rows(rows) if json.loads(r.candidate) == point["candidate"]]
        params = [r.metrics["params"] for r in mine]
        assert len(params) == 2 and point["params"] == pytest.approx(statistics.mean(params))
        assert point["confirmed"]["params"]["lower"] == pytest.approx(t_bound(params, "minimize"))


def test_failed_and_constraint_breaking_confirmation_runs_are_left_out(store):
    class Unlucky(SeededWorld):
        def __call__(self, spec, on_epoch=None) -> TrialResult:
            if spec.stage == "train" and spec.seed == 1:
                raise RuntimeError("worker lost")
            result = super().__call__(spec, on_epoch)
            if spec.stage == "train" and spec.seed == 2:
                result.metrics["params"] = 1e9  # breaks the constraint
            return result

    spec = spec_of({"top_k": 1, "seeds": 3}, constraints=["params <= 1000000"])
    engine = Engine.create(spec, store, InProcessExecutor(Unlucky()))
    report = engine.run()
    runs = {confirm_seed(r.stage): r for r in confirm_rows(store.trials(engine.search_id))}
    assert runs[1].status == Status.FAILED and "worker lost" in runs[1].error
    assert runs[2].status == Status.PRUNED and "violates" in runs[2].error
    assert runs[3].status == Status.OK
    point = report.front[0]  # the confirmed recipe leads
    assert point["confirmed"]["seeds"] == 1  # the good run alone: no spread to speak of
    assert point["accuracy"] == runs[3].metrics["accuracy"]
    assert point["confirmed"]["accuracy"]["std"] is None
    progress = readout.progress(spec, store.trials(engine.search_id))
    assert engine.progress()["failed"] == progress["failed"] >= 1
    assert engine.progress()["pruned"] == progress["pruned"] >= 1
    assert (progress["confirm_runs"], progress["confirm_done"]) == (3, 3)
    line = demo._front_table(report.front).splitlines()[2]
    assert line.endswith("[the value of 1 seed]")


@pytest.mark.parametrize("status", [SearchStatus.CANCELLED, SearchStatus.QUEUED])
def test_a_cancel_or_pause_during_confirmation_starts_no_further_run(store, status):
    class Stopping(SeededWorld):
        engine = None

        def __call__(self, spec, on_epoch=None) -> TrialResult:
            if spec.stage == "train" and spec.seed != 0:
                self.engine.cancel(status)  # while the first confirmation run trains
            return super().__call__(spec, on_epoch)

    spec, world = spec_of({"top_k": 2, "seeds": 3}), Stopping()
    engine = Engine.create(spec, store, InProcessExecutor(world))
    world.engine = engine
    assert engine.run().status == status
    rows = confirm_rows(store.trials(engine.search_id))
    ended = [r for r in rows if r.status != Status.QUEUED]
    assert len(ended) == 1 and ended[0].status == Status.OK  # the running one ended, stored
    assert len(rows) == 6  # the plan, stored when the confirmation began: five never started
    kinds = [e.kind for e in store.events(engine.search_id)]
    assert "confirm_started" in kinds and "confirm_finished" not in kinds
    progress = readout.progress(spec, store.trials(engine.search_id))
    assert (progress["confirm_runs"], progress["confirm_done"]) == (6, 1)
    if status == SearchStatus.QUEUED:  # paused: a resume runs the other five
        resumed = Engine.resume(store, engine.search_id, InProcessExecutor(SeededWorld()))
        assert resumed.run().status == SearchStatus.FINISHED
        assert len(confirm_rows(store.trials(engine.search_id))) == 6


def test_hash_equivalent_trials_are_one_recipe_confirmed_once():
    """Two candidates computing the same function (equal functional hashes, different
    candidate keys) are one recipe: one top_k slot, one confirmation, shared figures."""
    spec = spec_of({"top_k": 2, "seeds": 3})
    rows = [row(0, "train", 0.90, 200.0, fn="h"), row(1, "train", 0.90, 200.0, fn="h")]
    rows += [row(2, "train", 0.80, 100.0, fn="g")]
    rows += [
        row(n, f"confirm:{s}", 0.85 + s / 100, p, fn=f)
        for n, p, f in ((0, 200.0, "h"), (2, 100.0, "g"))
        for s in (1, 2, 3)
    ]
    progress = readout.progress(spec, rows)
    assert (progress["confirm_runs"], progress["confirm_done"]) == (6, 6)
    points = {p["trial_id"]: p for p in readout.pareto(spec, rows)["points"]}
    assert points[1]["confirmed"] == points[0]["confirmed"]
    assert to_confirm(spec, [0, 1, 2], [[0.9, 200.0]] * 2 + [[0.8, 100.0]], ["h", "h", "g"]) == [
        0,
        2,
    ]


def test_a_resumed_search_does_not_redo_finished_confirmation_runs(store):
    spec = spec_of({"top_k": 2, "seeds": 3})
    crashing = CrashingWorld(after=2)
    engine = Engine.create(spec, store, InProcessExecutor(crashing))
    with pytest.raises(Crash):
        engine.run()
    before = confirm_rows(store.trials(engine.search_id))
    finished = {(r.number, confirm_seed(r.stage)) for r in before if r.status == Status.OK}
    assert len(finished) == 2 and any(r.status == Status.RUNNING for r in before)

    world = SeededWorld()
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(world))
    assert resumed.run().status == SearchStatus.FINISHED
    events = store.events(engine.search_id)
    since = next(k for k, e in enumerate(events) if e.kind == "search_resumed")
    started = [e.payload for e in events[since:] if e.kind == "trial_started"]
    redone = [(p["trial_id"], p["seed"]) for p in started]
    assert all(confirm_seed(p["stage"]) is not None for p in started)  # nothing else re-ran
    assert len(redone) == len(set(redone)) == 4 and not set(redone) & finished  # 6 runs, 2 kept
    assert sum(world.seeds.values()) == 4
    rows = store.trials(engine.search_id)
    assert len(confirm_rows(rows)) == 6  # the re-queued row was reused
    assert all(f["seeds"] == 3 for f in confirmed_figures(spec, rows).values())


def test_a_finished_search_resumed_counts_its_runs_and_confirms_nothing_again(store):
    spec = spec_of({"top_k": 2, "seeds": 3})
    engine = Engine.create(spec, store, InProcessExecutor(SeededWorld()))
    engine.run()
    kinds = Counter(e.kind for e in store.events(engine.search_id))
    world = SeededWorld()
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(world))
    counted = (resumed.progress()["confirm_runs"], resumed.progress()["confirm_done"])
    assert counted == (6, 6)  # before it runs, as the rows say
    assert resumed.progress()["leader"] == engine.progress()["leader"]
    resumed.run()
    again = Counter(e.kind for e in store.events(engine.search_id))
    assert again["confirm_started"] == kinds["confirm_started"] == 1
    assert again["confirm_finished"] == kinds["confirm_finished"] == 1
    assert not world.seeds  # nothing trained again


def test_the_servers_shared_pool_says_whether_it_trains(tmp_path):
    with pytest.raises(SpecError, match=r"strategy\.confirm"):
        check_executor(spec_of({}), SharedExecutor(oracle_of(tmp_path)))
    check_executor(spec_of({}), SharedExecutor(InProcessExecutor()))


# --- the front the figures give (constructed rows) -------------------------------------------


def row(number, stage, accuracy, params, status=Status.OK, recipe=None, fn=None):
    recipe = number if recipe is None else recipe
    candidate = json.dumps({"n": recipe})
    return TrialRecord(
        id=None,
        search_id="s",
        number=number,
        stage=stage,
        status=status,
        candidate=candidate,
        candidate_key=f"k{recipe}",
        structural_hash=f"s{recipe}",
        functional_hash=fn,
        epochs=1,
        rung=0,
        metrics={"accuracy": accuracy, "params": params},
    )


def search_of(spec):
    return SearchRecord("s", "t", "task", spec.to_json(), SearchStatus.FINISHED, None, 0, 0)


def test_a_recipe_whose_seeds_disagree_moves_off_the_front():
    spec = spec_of({"top_k": 5, "seeds": 3})
    # single runs: A (0) is the most accurate, B (1) the smaller; both on the front
    rows = [row(0, "train", 0.90, 200.0), row(1, "train", 0.88, 100.0)]
    rows += [
        row(0, f"confirm:{s}", a, 200.0) for s, a in zip((1, 2, 3), (0.95, 0.78, 0.80), strict=True)
    ]
    rows += [
        row(1, f"confirm:{s}", a, 100.0) for s, a in zip((1, 2, 3), (0.88, 0.87, 0.89), strict=True)
    ]
    rows.append(row(1, "confirm:4", 0.1, 100.0, status=Status.FAILED))  # left out
    rows.append(row(2, "train", 0.88, 100.0, recipe=1))  # B again (a reused result): its twin
    front = readout.pareto(spec, rows)
    first, twin, fell = front["points"]
    assert twin["trial_id"] == 2 and twin["confirmed"] == first["confirmed"]
    assert first["trial_id"] == 1 and first["on_confirmed_front"] is True
    assert fell["trial_id"] == 0 and fell["on_confirmed_front"] is False  # B's means dominate
    assert fell["accuracy"] == pytest.approx(statistics.mean([0.95, 0.78, 0.80]))
    assert fell["single_run"]["accuracy"] == 0.90
    assert fell["confirmed"]["accuracy"]["std"] > first["confirmed"]["accuracy"]["std"]
    assert first["confirmed"]["seeds"] == 3
    recipe = readout.recipe(search_of(spec), rows)  # export: the best still on the front
    assert recipe["trial_id"] == 1 and recipe["confirmed"] == first["confirmed"]


def test_a_confirmed_mean_outranks_lucky_single_runs_of_a_larger_front():
    spec = spec_of({"top_k": 1, "seeds": 3})
    rows = [row(0, "train", 0.95, 300.0), row(1, "train", 0.94, 200.0)]
    rows += [row(2, "train", 0.93, 100.0)]
    rows += [row(0, f"confirm:{s}", a, 300.0) for s, a in ((1, 0.89), (2, 0.90), (3, 0.91))]
    points = readout.pareto(spec, rows)["points"]
    assert [p["trial_id"] for p in points] == [0, 1, 2]
    assert points[0]["accuracy"] == pytest.approx(0.90)
    assert readout.recipe(search_of(spec), rows)["trial_id"] == 0
    leader = readout.progress(spec, rows)["leader"]
    assert leader["trial_id"] == 0 and leader["values"]["accuracy"] == pytest.approx(0.90)


# --- a real digits search through the server and the CLI -------------------------------------


def test_a_digits_search_with_confirmation_stores_figures_of_three_seeds(
    server, capsys, tmp_path, tiny_spec
):
    data = tiny_spec(budget={"max_trials": 2})
    data["strategy"] |= {"confirm": {"top_k": 2, "seeds": 3}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    address = ("--address", server.address)
    assert main(["submit", str(path), "--wait", "--json", "--quiet", *address]) == 0
    search_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["pareto", search_id, "--json", *address]) == 0
    points = json.loads(capsys.readouterr().out)
    assert points and all(p["confirmed"]["seeds"] == 3 for p in points)
    assert main(["status", search_id, *address]) == 0
    out = capsys.readouterr().out
    assert f"front confirmed: {3 * len(points)} runs" in out
    # one statement: the confirmed leader's means, not the single runs' bests beside them
    leader = points[0]
    assert f"best accuracy (confirmed, mean of 3 seeds): #{leader['trial_id']} " in out
    assert "per-objective" not in out
    assert "hypervolume (single runs) " in out  # beside a mean, the single runs' measure
    assert main(["status", search_id, "--json", *address]) == 0
    progress = json.loads(capsys.readouterr().out)["progress"]  # through gRPC's Progress
    assert progress["confirm_runs"] == progress["confirm_done"] == 3 * len(points)
    assert progress["confirm_failed"] == 0
    assert main(["pareto", search_id, *address]) == 0
    assert "means of 3 seeds" in capsys.readouterr().out
    rows = server.store.trials(search_id)
    for point in points:
        runs = [r for r in confirm_rows(rows) if r.number == point["trial_id"]]
        accuracy = [r.metrics["accuracy"] for r in runs]
        figures = point["confirmed"]["accuracy"]
        assert len(runs) == 3 and figures["mean"] == pytest.approx(statistics.mean(accuracy))
        assert figures["std"] == pytest.approx(statistics.stdev(accuracy))
        assert figures["lower"] == pytest.approx(t_bound(accuracy, "maximize"))
        assert point["accuracy"] == pytest.approx(figures["mean"])


# --- the time budget stops the confirmation ---------------------------------------------------


class SlowSeedWorld(SeededWorld):
    """Each confirmation run reports ``cost`` device seconds (and moves ``clock``, a stand-in
    for the engine's ``time.perf_counter``, as far); the search's own runs next to nothing."""

    def __init__(self, cost: float, clock: list[float]) -> None:
        super().__init__()
        self.cost, self.clock = cost, clock

    def __call__(self, spec, on_epoch=None) -> TrialResult:
        result = super().__call__(spec, on_epoch)
        if spec.stage == "train" and spec.seed != 0:
            self.clock[0] += self.cost
            result.seconds = self.cost
        return result


@pytest.mark.parametrize("limit", ["max_device_seconds", "max_seconds"])
def test_the_time_budget_stops_the_confirmation_and_the_front_says_what_each_got(
    store, monkeypatch, limit
):
    from winnow.service.engine import engine as engine_module

    clock = [0.0]
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: clock[0])
    budget = {"max_trials": 6, limit: 150}  # the search's runs take ~0 s; 100 s a confirming
    spec = spec_of({"top_k": 2, "seeds": 3}, budget=budget)
    engine = Engine.create(spec, store, InProcessExecutor(SlowSeedWorld(100.0, clock)))
    assert engine.run().status == SearchStatus.FINISHED
    rows = store.trials(engine.search_id)
    runs = [r for r in confirm_rows(rows) if r.status != Status.QUEUED]  # the rest: planned
    assert len(runs) == 2 and all(r.status == Status.OK for r in runs)  # 100 s, then 200 s
    (number,) = {r.number for r in runs}  # the plan's first recipe got two of its seeds
    progress = readout.progress(spec, rows)
    assert (progress["confirm_runs"], progress["confirm_done"]) == (6, 2)
    points = readout.pareto(spec, rows)["points"]
    confirmed = [p for p in points if "confirmed" in p]  # the recipe and any twin of it
    assert points[0]["trial_id"] == number and points[0]["confirmed"]["seeds"] == 2  # not 3
    assert all(p["candidate"] == points[0]["candidate"] for p in confirmed)
    planned = to_confirm(spec, *readout_front(spec, rows))
    assert number == planned[0] and len(planned) == 2  # the other one stays a single run
    assert planned[1] not in {p["trial_id"] for p in confirmed}
    stopped = [e.payload for e in store.events(engine.search_id) if e.kind == "confirm_stopped"]
    expected = {"trials": planned, "seeds": [1, 2, 3], "runs": 6, "done": 2, "left": 4}
    assert stopped == [expected]  # in the plan's order


def readout_front(spec, rows):
    """The front's trial ids, points and recipes, as the engine plans the confirmation."""
    from winnow.service.engine.confirmed import row_identity

    _, done = readout.front_trials(spec, rows)
    return [c.trial_id for c in done], [c.values for c in done], [row_identity(c.row) for c in done]


class SlowSearchWorld(SeededWorld):
    """The search's own runs (seed 0) move ``clock`` by ``cost`` seconds each; the
    confirmation runs take none."""

    def __init__(self, cost: float, clock: list[float]) -> None:
        super().__init__()
        self.cost, self.clock = cost, clock

    def __call__(self, spec, on_epoch=None) -> TrialResult:
        if spec.stage == "train" and spec.seed == 0:
            self.clock[0] += self.cost
        return super().__call__(spec, on_epoch)


def test_a_time_budget_the_rungs_spent_starts_no_confirmation_and_a_resume_runs_its_plan(
    store, monkeypatch
):
    """``max_seconds`` ends the rungs (the usual case): no ``confirm_started``, the plan is
    stored (queued rows), the front is not confirmed and says why; a resume (a fresh clock:
    ``max_seconds`` counts each run of the engine) runs exactly the stored plan."""
    from winnow.service.engine import engine as engine_module
    from winnow.service.progress_text import confirm_text

    clock = [0.0]
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: clock[0])
    spec = spec_of({"top_k": 2, "seeds": 3}, budget={"max_trials": 6, "max_seconds": 250})
    engine = Engine.create(spec, store, InProcessExecutor(SlowSearchWorld(100.0, clock)))
    assert engine.run().status == SearchStatus.FINISHED
    rows = store.trials(engine.search_id)
    planned = to_confirm(spec, *readout_front(spec, rows))
    runs = confirm_rows(rows)
    assert {(r.number, confirm_seed(r.stage)) for r in runs} == {
        (n, s) for n in planned for s in confirm_seeds(spec)
    }
    assert all(r.status == Status.QUEUED for r in runs)  # planned, none started
    kinds = [e.kind for e in store.events(engine.search_id)]
    assert "confirm_started" not in kinds and "confirm_skipped" in kinds
    progress = readout.progress(spec, rows)
    assert (progress["confirm_runs"], progress["confirm_done"]) == (3 * len(planned), 0)
    assert confirm_text(progress, ended=True) == (
        f"front not confirmed: the time budget was spent before its {3 * len(planned)} runs"
    )
    assert all("confirmed" not in p for p in readout.pareto(spec, rows)["points"])
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(SeededWorld()))
    assert resumed.run().status == SearchStatus.FINISHED
    after = confirm_rows(store.trials(engine.search_id))
    assert sorted(r.id for r in after) == sorted(r.id for r in runs)  # the stored rows, run
    assert all(r.status == Status.OK for r in after)


def test_the_plan_is_the_one_stored_not_what_the_rule_picks_now(store):
    """Once the confirmation began its plan is the stored rows: a reader whose rule would pick
    fewer recipes (here: a spec of ``top_k`` 1) counts the runs planned then, and a resumed
    engine plans those, whatever the front it is handed."""
    spec = spec_of({"top_k": 2, "seeds": 3})
    engine = Engine.create(spec, store, InProcessExecutor(SeededWorld()))
    engine.run()
    rows = store.trials(engine.search_id)
    runs = confirm_rows(rows)
    assert len({r.number for r in runs}) == 2
    narrower = spec_of({"top_k": 1, "seeds": 3})
    progress = readout.progress(narrower, rows)
    assert (progress["confirm_runs"], progress["confirm_done"]) == (6, 6)
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(SeededWorld()))
    stored = {(r.number, confirm_seed(r.stage)) for r in runs}
    assert set(resumed.confirmation.plan({}, resumed.tracked)) == stored


def test_with_three_objectives_each_objectives_best_end_is_confirmed_first():
    """Crowding alone gives every end of every objective (the worst too) infinite distance;
    the most accurate, the smallest and the fastest come first, in the spec's order."""
    three = [*TWO_OBJECTIVES, {"name": "latency_ms", "direction": "minimize"}]
    points = [[0.95, 900, 5], [0.94, 800, 9], [0.93, 700, 4], [0.90, 500, 3], [0.80, 300, 2]]
    points += [[0.60, 100, 1.5]]
    ids, recipes = list(range(len(points))), [f"r{i}" for i in range(len(points))]
    two = spec_of({"top_k": 2, "seeds": 2}, objectives=three)
    assert to_confirm(two, ids, points, recipes) == [0, 5]  # accuracy's best, then params'
    # latency's best is params' here (5): the next is the most isolated of the rest
    three_k = spec_of({"top_k": 3, "seeds": 2}, objectives=three)
    chosen = to_confirm(three_k, ids, points, recipes)
    assert chosen[:2] == [0, 5] and len(chosen) == 3
    faster = [p[:2] + [p[2] if i != 2 else 1.0] for i, p in enumerate(points)]  # 2: fastest
    assert to_confirm(three_k, ids, faster, recipes) == [0, 5, 2]


class FailingSeedWorld(SeededWorld):
    """The confirmation run of ``seed`` fails (for every recipe)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.failing = seed

    def __call__(self, spec, on_epoch=None) -> TrialResult:
        if spec.stage == "train" and spec.seed == self.failing:
            return TrialResult(Status.FAILED, error="out of memory")
        return super().__call__(spec, on_epoch)


def test_failed_confirmation_runs_are_counted_and_said(store):
    from winnow.service.progress_text import confirm_text

    spec = spec_of({"top_k": 1, "seeds": 3})
    engine = Engine.create(spec, store, InProcessExecutor(FailingSeedWorld(2)))
    engine.run()
    live = engine.progress()
    progress = readout.progress(spec, store.trials(engine.search_id))
    for view in (live, progress):
        assert (view["confirm_runs"], view["confirm_done"], view["confirm_failed"]) == (3, 3, 1)
    assert confirm_text(progress, ended=True) == "front confirmed: 3 runs (1 failed)"
    assert progress["leader"]["confirmed"]["seeds"] == 2  # the failed run counts in no mean
