"""Rebuild an engine from its stored records (``Engine.resume``).

Rows are replayed per candidate in the order they were written: finished rows are kept as they
are (never re-run); rows a dead process left ``queued``/``running`` go back to the engine's
queue; a candidate that passed the proxy screen but had no training row yet is queued for its
first rung. The rung ladder, the proxy screen's population and labels, the counters and the
completed results are rebuilt, and every candidate is added to a fresh Optuna study with the
state the sampler had been (or would have been) told.
"""

from __future__ import annotations

from itertools import groupby
from typing import TYPE_CHECKING

from optuna.trial import TrialState, create_trial

from winnow.records import Status, TrialRecord
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash

if TYPE_CHECKING:
    from winnow.service.engine.engine import Engine, Tracked


def restore_engine(engine: Engine, rows: list[TrialRecord]) -> None:
    from winnow.service.engine.engine import Tracked

    ordered = sorted(rows, key=lambda r: (r.number, r.id))
    for number, group in groupby(ordered, key=lambda r: r.number):
        group = list(group)
        candidate = Candidate.from_json(group[0].candidate)
        params, distributions = engine.space.to_optuna(candidate)
        structural = group[0].structural_hash or structural_hash(candidate)
        tracked = Tracked(number, candidate, params, distributions, structural)
        tracked.functional = next((r.functional_hash for r in group if r.functional_hash), None)
        engine.tracked[number] = tracked
        engine.counts["proposals"] += 1
        state, values, intermediate = _replay(engine, tracked, group)
        _add_to_study(engine, tracked, state, values, intermediate)
    engine._hypervolume = engine._compute_hypervolume()


def _replay(engine: Engine, tracked: Tracked, rows: list[TrialRecord]):
    """Apply one candidate's rows; returns its sampler state, values and intermediate value."""
    state, values, intermediate = TrialState.RUNNING, None, None
    needs_training = False
    for row in rows:
        metrics = row.metrics
        if row.stage == "proxy":
            state, needs_training = _replay_proxy(engine, tracked, row, metrics)
            continue
        needs_training = False
        if row.status in (Status.QUEUED, Status.RUNNING):
            engine.requeued.append((tracked, row.rung, row.id))
            state = TrialState.RUNNING
            continue
        state, values, intermediate = _replay_train(engine, tracked, row, metrics)
    if needs_training:
        engine.requeued.append((tracked, 0, None))
    return state, values, intermediate


def _replay_proxy(engine: Engine, tracked: Tracked, row: TrialRecord, metrics: dict):
    if engine.screen is not None and row.status in ("ok", "pruned"):
        proxies = engine.spec.strategy.screen.proxies
        engine.screen.add(tracked.number, {p: metrics.get(f"proxy.{p}") for p in proxies})
    if row.status == "failed":
        engine.counts["failed"] += 1
        return TrialState.FAIL, False
    if row.status == "pruned":
        engine.counts["pruned"] += 1
        return TrialState.PRUNED, False
    return TrialState.RUNNING, True


def _replay_train(engine: Engine, tracked: Tracked, row: TrialRecord, metrics: dict):
    if row.reused:
        engine.counts["cache_hits"] += 1
        values = engine._values(metrics)
        engine.completed[tracked.number] = values
        return TrialState.COMPLETE, values, None
    engine.counts["trained"] += 1
    engine.device_seconds += row.seconds
    if row.status == "failed":
        engine.counts["failed"] += 1
        return TrialState.FAIL, None, None
    if row.status == "pruned":
        engine.counts["pruned"] += 1
        return TrialState.PRUNED, None, None
    if row.rung > 0:
        engine.ladder.mark_promoted(row.rung - 1, tracked.number)
    if engine.screen is not None and row.rung == 0:
        engine.screen.observe(tracked.number, metrics)
    values = engine._values(metrics)
    if row.rung == engine.ladder.top:
        engine.completed[tracked.number] = values
        return TrialState.COMPLETE, values, None
    engine.ladder.record(row.rung, tracked.number, values)
    return TrialState.PRUNED, None, (engine.ladder.rungs[row.rung], values[0])


def _add_to_study(engine: Engine, tracked: Tracked, state, values, intermediate) -> None:
    single = len(engine.objectives) == 1
    trial = create_trial(
        params=tracked.params,
        distributions=tracked.distributions,
        state=state,
        values=values if state == TrialState.COMPLETE else None,
        intermediate_values={intermediate[0]: intermediate[1]} if intermediate and single else None,
    )
    engine.study.add_trial(trial)
    frozen = engine.study.trials[-1]  # the newest is never hidden (SamplerViewStorage)
    tracked.optuna_number, tracked.trial_id = frozen.number, frozen._trial_id
    tracked.told = state != TrialState.RUNNING
