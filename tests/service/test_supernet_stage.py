"""The supernet stage end to end: a small real search on digits with ``strategy.supernet``
trains the macro supernet once (a trial of its own, with epoch events), scores candidates by
inherited accuracy (``supernet`` rows), prunes the weak ones, and a second search reuses the
stored supernet; an mlp space's search trains one supernet whatever its norms; the training
trial resumes from its checkpoint after a kill; spec errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from winnow.search_space.specfile import SpecError
from winnow.search_space.trial import Status, TrialResult, TrialSpec
from winnow.service.engine import Engine
from winnow.service.engine.supernet import METRIC, supernet_key
from winnow.service.engine.supernet_rule import QuantileRule
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.supernet.registry import SUPERNETS
from winnow.workers.executor import InProcessExecutor
from winnow.workers.run import run_trial
from winnow.workers.supernet_trials import LOAD_ERROR, TRAIN_STAGE

MACRO = {
    "family": "macro",
    "base_channels": [8, 16],
    "strides": [1, 2],
    "stem_channels": 8,
    "head_channels": 16,
    "depth": [1, 2],
    "kernel_size": [3, 5],
    "expand_ratio": [3, 4],
}
SUPERNET = {"epochs": 2, "bn_batches": 2, "keep_fraction": 0.5, "warmup": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_spec(supernet=SUPERNET, **extra):
    data = {
        "space": {
            "architecture": MACRO,
            "optimizer": {"name": "adamw", "lr": 0.003, "batch_size": 128},
        },
        "task": {"dataset": "digits"},
        "budget": {"max_trials": 4, "max_proposals": 16},
        "strategy": {
            "rungs": [1],
            "screen": {"proxies": ["params"], "keep_fraction": 1.0, "min_population": 1},
            "supernet": supernet,
        },
        "seed": 0,
        "keep_weights": 0,
    }
    return parse_search_spec(data | extra)


class Counting:
    """The real trials, counted by stage."""

    def __init__(self):
        self.stages: Counter[str] = Counter()

    def __call__(self, spec: TrialSpec, on_epoch=None):
        self.stages[spec.stage] += 1
        return run_trial(spec, on_epoch)


@pytest.fixture
def store(tmp_path):
    return Store(sqlite_url(tmp_path / "search.db"))


def search(store, world):
    engine = Engine.create(make_spec(), store, InProcessExecutor(world))
    engine.run()
    return engine


def test_a_search_trains_the_supernet_once_scores_prunes_and_the_next_reuses_it(store):
    world = Counting()
    first = search(store, world)
    assert world.stages[TRAIN_STAGE] == 1
    kinds = [e.kind for e in store.events(first.search_id)]
    epochs = [e.payload for e in store.events(first.search_id) if e.kind == "supernet_epoch"]
    assert [p["epoch"] for p in epochs] == [1, 2]
    assert kinds.index("supernet_training") < kinds.index("supernet_trained")
    rows = [r for r in store.trials(first.search_id) if r.stage == "supernet"]
    assert len(rows) > SUPERNET["warmup"]
    assert all(0 <= r.metrics[METRIC] <= 1 for r in rows)
    pruned = [r for r in rows if r.status == Status.PRUNED]
    assert pruned and all("supernet: inherited accuracy" in r.error for r in pruned)
    record = store.supernet(supernet_key(first.spec))
    assert record is not None and record.family == "macro"

    again = Counting()
    second = search(store, again)
    assert again.stages[TRAIN_STAGE] == 0  # the stored supernet answers
    assert "supernet_reused" in [e.kind for e in store.events(second.search_id)]
    scored = [r for r in store.trials(second.search_id) if r.stage == "supernet"]
    assert scored  # with the reused supernet


MLP_SPACE = {
    "architecture": {"family": "mlp", "depth": [1, 2], "width": [16, 32]},
    "normalization": ["layernorm", "batchnorm"],
    "optimizer": {"name": "adamw", "lr": 0.003, "batch_size": 128},
    "quantization": {"weight_bits": [8, 32], "activation_bits": [8, 32]},
}


def test_a_search_of_an_mlp_space_scores_every_norm_with_one_batchnorm_supernet(store):
    world = Counting()
    spec = make_spec(space=MLP_SPACE, budget={"max_trials": 6, "max_proposals": 16})
    engine = Engine.create(spec, store, InProcessExecutor(world))
    engine.run()
    assert world.stages[TRAIN_STAGE] == 1
    rows = [r for r in store.trials(engine.search_id) if r.stage == "supernet"]
    assert len(rows) > SUPERNET["warmup"] and all(0 <= r.metrics[METRIC] <= 1 for r in rows)
    # the supernet is batchnorm's; a layernorm candidate is scored on the rest of its recipe
    assert {json.loads(r.candidate)["normalization"] for r in rows} == {"layernorm", "batchnorm"}
    record = store.supernet(supernet_key(engine.spec))
    assert record is not None and record.family == "mlp"
    # the evidence ladder's supernet tier: over the trained candidates the supernet scored
    trained = {r.number for r in store.trials(engine.search_id) if r.completed(0)}
    scored = {r.number for r in rows if r.status == Status.OK}
    (tier,) = [t for t in engine.progress()["evidence_ladder"] if t["tier"] == "supernet"]
    assert tier["n"] == len(trained & scored) > 0


def test_a_supernet_that_fails_to_train_is_reported_and_the_cascade_goes_on_without_it(store):
    world = Counting()

    def failing(spec: TrialSpec, on_epoch=None):
        if spec.stage == TRAIN_STAGE:
            world.stages[spec.stage] += 1
            return TrialResult(Status.FAILED, error="RuntimeError: out of memory")
        return world(spec, on_epoch)

    engine = search(store, failing)
    events = store.events(engine.search_id)
    assert [e.payload["error"] for e in events if e.kind == "supernet_failed"] == [
        "RuntimeError: out of memory"
    ]
    assert world.stages[TRAIN_STAGE] == 1 and world.stages["supernet"] == 0
    trials = store.trials(engine.search_id)
    assert not [r for r in trials if r.stage == "supernet"]
    assert [r for r in trials if r.stage == "train" and r.status == Status.OK]


def test_the_training_trial_resumes_from_its_checkpoint_after_a_kill(store, tmp_path):
    spec = make_spec(supernet=SUPERNET | {"epochs": 3})
    engine = Engine.create(spec, store, InProcessExecutor(run_trial))
    options = engine.stages[-2].trained.options()
    options |= {"output": str(tmp_path / "s.pt"), "checkpoint": str(tmp_path / "s.ckpt")}
    trial = TrialSpec(
        _any_candidate(spec), "digits", stage=TRAIN_STAGE, options=json.dumps(options)
    )

    class Killed(BaseException):  # as a kill -9 would: nothing after the checkpoint runs
        pass

    def die_after_first(epoch, epochs, loss, seconds):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        run_trial(trial, die_after_first)
    assert (tmp_path / "s.ckpt").is_file() and not (tmp_path / "s.pt").exists()
    seen = []
    result = run_trial(trial, lambda epoch, *rest: seen.append(epoch))
    assert result.status == Status.OK and seen == [2, 3]  # epoch 1 is not trained again
    assert (tmp_path / "s.pt").is_file() and not (tmp_path / "s.ckpt").exists()


@pytest.mark.slow
def test_a_training_trial_whose_worker_is_killed_is_retried_and_resumes(store, tmp_path):
    """kill -9 on the local pool's worker after its first epoch: the pool retries the trial,
    which resumes from the checkpoint (epoch 1 is reported once, not trained again)."""
    import os
    import signal

    from winnow.workers.local import LocalExecutor

    spec = make_spec(supernet=SUPERNET | {"epochs": 4})
    engine = Engine.create(spec, store, InProcessExecutor(run_trial))
    options = engine.stages[-2].trained.options()
    options |= {"output": str(tmp_path / "s.pt"), "checkpoint": str(tmp_path / "s.ckpt")}
    trial = TrialSpec(
        _any_candidate(spec), "digits", stage=TRAIN_STAGE, options=json.dumps(options)
    )
    seen: list[int] = []
    # two workers: one torch thread each (many tiny ops are many times slower on two threads
    # of a busy two-core machine)
    with LocalExecutor(workers=2, max_retries=1) as pool:

        def on_epoch(epoch, *rest):
            seen.append(epoch)
            if len(seen) == 1:  # the checkpoint of epoch 1 is written before it is reported
                busy = next(w for w in pool.workers if w.task is not None)
                os.kill(busy.process.pid, signal.SIGKILL)

        result = pool.submit(trial, on_epoch).result(timeout=300)
    assert result.status == Status.OK, result.error
    assert seen.count(1) == 1 and seen[-1] == 4 and (tmp_path / "s.pt").is_file()


def _any_candidate(spec):
    import random

    from winnow.search_space.params import RandomChooser

    return spec.search_space.suggest(RandomChooser(random.Random(0)))


def test_the_rule_keeps_the_warm_up_then_prunes_below_the_running_quantile():
    rule = QuantileRule(keep_fraction=0.5, warmup=2)
    assert rule.judge([0.1], 0.1) == (True, None) and rule.judge([0.1, 0.2], 0.2) == (True, None)
    keep, threshold = rule.judge([0.1, 0.2, 0.05], 0.05)
    assert not keep and threshold == pytest.approx(0.1)
    assert rule.judge([0.1, 0.2, 0.05, 0.9], 0.9)[0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"supernet": {"epoch": 3}}, "strategy.supernet.epoch': unknown field; allowed: epochs"),
        ({"supernet": {"keep_fraction": 0}}, "strategy.supernet.keep_fraction"),
        ({"name": "tpe", "supernet": {}}, "the supernet stage is the cascade's"),
    ],
)
def test_spec_errors_name_the_field(change, message):
    data = make_spec().model_dump(mode="json")
    data["strategy"] |= change
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        parse_search_spec(data)


def test_a_family_without_a_supernet_is_refused_at_submission(monkeypatch):
    # only macro's: the test holds whichever families have registered one since
    monkeypatch.setattr(SUPERNETS, "_entries", {"macro": SUPERNETS.get("macro")})
    data = make_spec().model_dump(mode="json")
    data["space"] = {"architecture": {"family": "mlp", "width": [16, 32]}}
    with pytest.raises(SpecError, match="family 'mlp' has no supernet yet; families with one"):
        parse_search_spec(data)


def test_an_mlp_space_of_no_sliceable_norm_is_refused_at_submission():
    data = make_spec().model_dump(mode="json")
    data["space"] = MLP_SPACE | {"normalization": ["evonorm_b0", "evonorm_s0"]}
    with pytest.raises(SpecError, match=r"strategy\.supernet.*has an elastic-width form"):
        parse_search_spec(data)


def _failing_stage(world, stage, error="RuntimeError: boom", times=1):
    """``world``, whose first ``times`` trials of ``stage`` fail."""
    left = [times]

    def run(spec: TrialSpec, on_epoch=None):
        if spec.stage == stage and left[0] > 0:
            left[0] -= 1
            world.stages[spec.stage] += 1
            return TrialResult(Status.FAILED, error=error)
        return world(spec, on_epoch)

    return run


def test_a_search_whose_supernet_scoring_failed_resumes(store):
    engine = search(store, _failing_stage(Counting(), "supernet"))
    rows = [r for r in store.trials(engine.search_id) if r.stage == "supernet"]
    assert any(r.status == Status.FAILED and METRIC not in r.metrics for r in rows)
    resumed = Engine.resume(store, engine.search_id, InProcessExecutor(run_trial))
    screen = resumed.stages[-2]
    assert len(screen.rule.scores) == len([r for r in rows if METRIC in r.metrics]) > 0


def test_a_retrained_supernet_is_scored_afresh_not_from_the_lost_ones_cache(store):
    first = search(store, Counting())
    Path(store.supernet(supernet_key(first.spec)).path).unlink()  # the file is lost
    world = Counting()
    second = search(store, world)
    rows = [r for r in store.trials(second.search_id) if r.stage == "supernet"]
    assert world.stages[TRAIN_STAGE] == 1 and rows
    assert world.stages["supernet"] == len(rows)  # every score is the new supernet's


def test_a_supernet_file_that_cannot_be_loaded_is_reported_once_and_the_cascade_goes_on(
    store, tmp_path
):
    world = Counting()
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a torch file")

    def trains_garbage(spec: TrialSpec, on_epoch=None):
        if spec.stage == TRAIN_STAGE:
            world.stages[spec.stage] += 1
            return TrialResult(Status.OK, value=str(broken))
        return world(spec, on_epoch)

    engine = search(store, trains_garbage)
    failed = [e.payload for e in store.events(engine.search_id) if e.kind == "supernet_failed"]
    assert len(failed) == 1 and LOAD_ERROR in failed[0]["error"]
    assert world.stages["supernet"] == 1  # the first scoring found it out; none after
    trials = store.trials(engine.search_id)
    assert not [r for r in trials if r.stage == "supernet"]
    assert [r for r in trials if r.stage == "train" and r.status == Status.OK]


def test_a_checkpoint_that_cannot_be_resumed_is_set_aside_and_training_starts_afresh(
    store, tmp_path
):
    spec = make_spec()
    engine = Engine.create(spec, store, InProcessExecutor(run_trial))
    options = engine.stages[-2].trained.options()
    options |= {"output": str(tmp_path / "s.pt"), "checkpoint": str(tmp_path / "s.ckpt")}
    (tmp_path / "s.ckpt").write_bytes(b"truncated by a crash")
    trial = TrialSpec(
        _any_candidate(spec), "digits", stage=TRAIN_STAGE, options=json.dumps(options)
    )
    seen = []
    result = run_trial(trial, lambda epoch, *rest: seen.append(epoch))
    assert result.status == Status.OK, result.error
    assert seen == [1, 2] and (tmp_path / "s.pt").is_file()
    assert (tmp_path / "s.ckpt.bad").read_bytes() == b"truncated by a crash"


def test_a_search_waiting_for_another_ones_training_sees_its_cancel(store):
    import threading
    import time

    from winnow.service.engine.supernet import _training_lock

    engine = Engine.create(make_spec(), store, InProcessExecutor(run_trial))
    lock = _training_lock(supernet_key(engine.spec))

    def kinds():
        return [e.kind for e in store.events(engine.search_id)]

    with lock:  # another search is training this supernet, and does not finish
        runner = threading.Thread(target=engine.run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        while "supernet_waiting" not in kinds() and time.monotonic() < deadline:
            time.sleep(0.1)
        engine.cancel()
        runner.join(timeout=60)
        assert not runner.is_alive()  # it stopped waiting
    assert kinds().count("supernet_waiting") == 1 and "supernet_training" not in kinds()


def test_a_training_stopped_with_the_search_is_reported_cancelled(store):
    world = Counting()
    engine = None

    def cancelled_while_training(spec: TrialSpec, on_epoch=None):
        if spec.stage == TRAIN_STAGE:
            engine.cancel()
            return TrialResult(Status.FAILED, error="cancelled with the search")
        return world(spec, on_epoch)

    engine = Engine.create(make_spec(), store, InProcessExecutor(cancelled_while_training))
    engine.run()
    kinds = [e.kind for e in store.events(engine.search_id)]
    assert "supernet_cancelled" in kinds and "supernet_failed" not in kinds


def test_a_supernet_trial_in_process_leaves_the_callers_random_generator_alone(store, tmp_path):
    spec = make_spec(supernet=SUPERNET | {"epochs": 1})
    engine = Engine.create(spec, store, InProcessExecutor(run_trial))
    options = engine.stages[-2].trained.options()
    options |= {"output": str(tmp_path / "s.pt"), "checkpoint": str(tmp_path / "s.ckpt")}
    trial = TrialSpec(
        _any_candidate(spec), "digits", stage=TRAIN_STAGE, options=json.dumps(options)
    )
    torch.manual_seed(12345)
    before = torch.get_rng_state()
    assert run_trial(trial).status == Status.OK
    assert torch.equal(torch.get_rng_state(), before)
