"""Records <-> the ``winnow.v1`` messages, and messages -> the SDK's dicts: the one place that
knows the wire's field names (the servicer sends with it, the client reads with it).

Torch-free, as the client needs: it imports only ``json``, ``winnow.records`` and the generated
code. Empty proto strings stand for None (proto3 has no null); JSON travels as text.
"""

from __future__ import annotations

import json
import math
from typing import Any

from winnow.records import (
    EventRecord,
    SearchRecord,
    SearchStatus,
    Status,
    TrialRecord,
    importance_warning,
)
from winnow.service.export import recipe as export_recipe
from winnow.v1 import search_pb2 as pb

FIGURES = ("mean", "std", "lower")  # a confirmed objective's (``engine.confirmed.figures``)

# --- records -> messages (the servicer) -------------------------------------------------------

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1  # the range of the messages' int32 fields


def int32(value: int) -> int:
    """``value`` as an int32 field carries it: saturated rather than overflowing. The server
    refuses a spec whose reply would need this (``out_of_range``); a search stored by an older
    winnow may still hold numbers past today's bounds, and must stay readable."""
    return min(max(int(value), INT32_MIN), INT32_MAX)


def out_of_range(progress: dict[str, Any]) -> list[str]:
    """``field = value`` for each integer of ``readout.progress``'s counters that no int32
    field of ``Progress`` can carry (``int32`` would saturate it)."""
    return [
        f"{name} = {value}"
        for name, value in progress.items()
        if isinstance(value, int) and int32(value) != value
    ]


def _error_text(error: str | None, note: str | None) -> str:
    """The search's error and the reader's note, the note once (a search that failed to
    resume already says it in its error)."""
    if note and error and note in error:
        return error
    return "; ".join(text for text in (error, note) if text)


def search_message(
    search: SearchRecord, progress: dict[str, Any] | None = None, note: str | None = None
) -> pb.Search:
    """``progress``: ``readout.progress``'s counters (None: a message without them); its
    ``leader`` dict becomes a ``ParetoPoint`` without a candidate. ``note``: what the reader
    says of the search besides its error (``readout.StoredSpec.note``), sent after it."""
    message = pb.Search(
        id=search.id,
        name=search.name,
        status=str(search.status),
        error=_error_text(search.error, note),
        spec_json=search.spec_json,
        created_at=search.created_at,
        updated_at=search.updated_at,
    )
    if progress is not None:
        fields = dict(progress)
        leader = fields.pop("leader", None)
        ladder = fields.pop("evidence_ladder", None) or []
        fields["front_epochs"] = fields.get("front_epochs") or 0  # 0: no front yet
        fields["top_epochs"] = fields.get("top_epochs") or 0
        fields = {k: int32(v) if isinstance(v, int) else v for k, v in fields.items()}
        message.progress.CopyFrom(pb.Progress(**fields))
        message.progress.evidence_ladder.extend(ladder_tier(tier) for tier in ladder)
        if leader is not None:
            trial_id = int32(leader["trial_id"])
            names = list(leader["values"])  # a confirmed leader's figures of each
            confirmed = confirmed_message(leader, names)
            point = pb.ParetoPoint(trial_id=trial_id, objectives=leader["values"])
            if confirmed is not None:
                point.confirmed.CopyFrom(confirmed)
            message.progress.leader.CopyFrom(point)
    return message


def ladder_tier(tier: dict[str, Any]) -> pb.LadderTier:
    """One tier of ``evidence_ladder.EvidenceLadder.measure`` (a tau of None stays unset)."""
    message = pb.LadderTier(tier=tier["tier"], n=int32(tier["n"]))
    message.below_params = tier["below_params"]
    message.params_n = int32(tier.get("params_n", 0))
    message.zero_weight = bool(tier.get("zero_weight"))
    if tier["tau"] is not None:
        message.tau = tier["tau"]
    if tier.get("params_tau") is not None:
        message.params_tau = tier["params_tau"]
    return message


def trial_message(trial: TrialRecord) -> pb.Trial:
    return pb.Trial(
        row_id=trial.id,
        trial_id=int32(trial.number),
        stage=trial.stage,
        epochs=int32(trial.epochs),
        rung=int32(trial.rung),
        status=str(trial.status),
        candidate_json=trial.candidate,
        metrics_json=json.dumps(trial.metrics),  # as stored: parsing and dumping keep the text
        error=trial.error or "",
        reused=trial.reused,
        seconds=trial.seconds,
        device=trial.device or "",
        structural_hash=trial.structural_hash or "",
        functional_hash=trial.functional_hash or "",
        host=trial.host or "",
        weights_kept=trial.weights_path is not None,
        loss_curve=trial.loss_curve,
        accuracy_curve=trial.accuracy_curve,
    )


def event_message(event: EventRecord, snapshot: pb.Search) -> pb.SearchEvent:
    return pb.SearchEvent(
        id=event.id,
        kind=event.kind,
        time=event.time,
        payload_json=json.dumps(event.payload),
        search=snapshot,
    )


def front_message(front: dict[str, Any]) -> pb.ParetoFront:
    """``readout.pareto``'s front (``epochs`` None, no trained trial yet, is sent as 0)."""
    points = [
        pb.ParetoPoint(
            trial_id=int32(p["trial_id"]),
            objectives={name: p[name] for name in front["objectives"]},
            candidate_json=json.dumps(p["candidate"], sort_keys=True),
            confirmed=confirmed_message(p, front["objectives"]),
        )
        for p in front["points"]
    ]
    return pb.ParetoFront(
        objectives=front["objectives"],
        points=points,
        hypervolume=front["hypervolume"],
        epochs=int32(front["epochs"] or 0),
        top_epochs=int32(front["top_epochs"]),
    )


def confirmed_message(point: dict[str, Any], objectives: list[str]) -> pb.Confirmed | None:
    """A front point's confirmed figures (``readout.confirmed_point``; None when it has none);
    a figure undefined under two runs travels as NaN."""
    confirmed = point.get("confirmed")
    if confirmed is None:
        return None
    nan = float("nan")
    figures = {
        name: pb.ConfirmedFigures(
            **{k: nan if confirmed[name][k] is None else confirmed[name][k] for k in FIGURES}
        )
        for name in objectives
    }
    return pb.Confirmed(
        objectives=figures,
        seeds=int32(confirmed["seeds"]),
        on_front=bool(point["on_confirmed_front"]),
        single_run=point["single_run"],
    )


def recipe_message(search_id: str, recipe: dict[str, Any], files: dict[str, bytes]) -> pb.Recipe:
    """``readout.recipe``'s recipe (as JSON) and the files of its export bundle."""
    return pb.Recipe(
        search_id=search_id,
        trial_id=recipe["trial_id"],
        recipe_json=export_recipe.to_json(recipe),
        files=files,
    )


def importance_message(found: Any, evaluator: str, min_trials: int) -> pb.ImportanceReport:
    """``engine.importance.importances``'s list (``Importance`` records, read by attribute:
    this module imports no optuna) as the reply."""
    return pb.ImportanceReport(
        evaluator=evaluator,
        min_trials=int32(min_trials),
        importances=[
            pb.Importance(
                epochs=int32(i.epochs),
                objective=i.objective,
                trials=int32(i.trials),
                results=int32(i.results),
                params=[pb.ParamImportance(name=k, importance=v) for k, v in i.params.items()],
                left_out=list(i.left_out),
            )
            for i in found
        ],
    )


# --- messages -> the SDK's dicts (the client) -------------------------------------------------


def progress_dict(progress: pb.Progress) -> dict[str, Any]:
    """``leader``: None when the front is empty (or the server predates leaders); a
    confirmed one with ``confirmed``, ``single_run``, ``on_confirmed_front``;
    ``front_epochs``: None when empty, below ``top_epochs`` when the front is a lower rung's;
    ``evidence_ladder``: ``Engine.progress``'s (empty from a server that predates it)."""
    leader = None
    if progress.HasField("leader"):
        values = dict(progress.leader.objectives)
        leader = {"trial_id": progress.leader.trial_id, "values": values}
        if progress.leader.HasField("confirmed"):  # its means: readout.front_leader
            leader |= confirmed_dict(progress.leader.confirmed, values)
    return {
        "trained": progress.trained,
        "candidates": progress.candidates,
        "epochs": progress.epochs,
        "max_trials": progress.max_trials,
        "proposals": progress.proposals,
        "cache_hits": progress.cache_hits,
        "pruned": progress.pruned,
        "failed": progress.failed,
        "hypervolume": progress.hypervolume,
        "best": dict(progress.best),
        "front_size": progress.front_size,
        "leader": leader,
        "front_epochs": progress.front_epochs or None,
        "top_epochs": progress.top_epochs or None,
        "confirm_runs": progress.confirm_runs,  # the front's confirmation: 0 before it began
        "confirm_done": progress.confirm_done,
        "confirm_failed": progress.confirm_failed,
        "evidence_ladder": [
            {
                "tier": t.tier,
                "n": t.n,
                "tau": t.tau if t.HasField("tau") else None,
                "below_params": t.below_params,
                "params_n": t.params_n,
                "params_tau": t.params_tau if t.HasField("params_tau") else None,
                "zero_weight": t.zero_weight,
            }
            for t in progress.evidence_ladder
        ],
    }


def search_dict(search: pb.Search) -> dict[str, Any]:
    return {
        "id": search.id,
        "name": search.name,
        "status": search.status,
        "error": search.error or None,
        "spec": _spec_of(search.spec_json),
        "created_at": search.created_at,
        "updated_at": search.updated_at,
        "progress": progress_dict(search.progress),
    }


def _spec_of(spec_json: str) -> Any:
    """A search's spec as sent; None when it was left out (too large) or is not JSON (stored so
    by an older server or by hand: the search's ``error`` says its spec no longer validates)."""
    try:
        return json.loads(spec_json) if spec_json else None
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's stack
        return None


def trial_dict(trial: pb.Trial) -> dict[str, Any]:
    return {
        "row_id": trial.row_id,
        "trial_id": trial.trial_id,
        "stage": trial.stage,
        "epochs": trial.epochs,
        "rung": trial.rung,
        "status": trial.status,
        "candidate": json.loads(trial.candidate_json),
        "metrics": json.loads(trial.metrics_json),
        "error": trial.error or None,
        "reused": trial.reused,
        "seconds": trial.seconds,
        "device": trial.device or None,
        "structural_hash": trial.structural_hash or None,
        "functional_hash": trial.functional_hash or None,
        "host": trial.host or None,
        "weights_kept": trial.weights_kept,
        "loss_curve": list(trial.loss_curve),
        "accuracy_curve": list(trial.accuracy_curve),
    }


def front_points(front: pb.ParetoFront) -> list[dict[str, Any]]:
    """The points, each with the front's fidelity (``epochs``: of the top rung, or of the
    highest rung reached when no trial completed; see :func:`front_dict`); a confirmed one
    with ``confirmed`` (``{objective: {"mean", "std", "lower"}, "seeds"}``), ``single_run``
    and ``on_confirmed_front``, as ``readout.confirmed_point`` gives them."""
    return [
        {
            "trial_id": p.trial_id,
            **{name: p.objectives[name] for name in front.objectives},
            "epochs": front.epochs,
            "candidate": json.loads(p.candidate_json),
            **(confirmed_dict(p.confirmed, front.objectives) if p.HasField("confirmed") else {}),
        }
        for p in front.points
    ]


def confirmed_dict(confirmed: pb.Confirmed, objectives: Any) -> dict[str, Any]:
    """A point's confirmation entries again (NaN figures as None)."""
    figures: dict[str, Any] = {
        name: {
            k: None if math.isnan(v := getattr(confirmed.objectives[name], k)) else v
            for k in FIGURES
        }
        for name in objectives
    }
    return {
        "confirmed": figures | {"seeds": confirmed.seeds},
        "single_run": dict(confirmed.single_run),
        "on_confirmed_front": confirmed.on_front,
    }


def front_dict(front: pb.ParetoFront) -> dict[str, Any]:
    """``readout.pareto``'s dict again: objectives, points, hypervolume, epochs (None before
    any trained trial) and top_epochs (0 from a server older than fidelity-marked fronts)."""
    return {
        "objectives": list(front.objectives),
        "points": front_points(front),
        "hypervolume": front.hypervolume,
        "epochs": front.epochs or None,
        "top_epochs": front.top_epochs,
    }


def importance_dict(report: pb.ImportanceReport) -> dict[str, Any]:
    """``{"evaluator", "min_trials", "importances": [{"epochs", "objective", "trials",
    "results", "params": {name: importance} (highest first), "left_out": [...], "warning"}]}``
    (``warning``: ``records.importance_warning``, None over enough results)."""
    return {
        "evaluator": report.evaluator,
        "min_trials": report.min_trials,
        "importances": [
            {
                "epochs": i.epochs,
                "objective": i.objective,
                "trials": i.trials,
                "results": i.results,
                "params": {p.name: p.importance for p in i.params},
                "left_out": list(i.left_out),
                # fewer than 50 results: the dashboard's caution, for every reader
                "warning": importance_warning(i.trials),
            }
            for i in report.importances
        ],
    }


def payload(event: pb.SearchEvent) -> dict[str, Any]:
    return json.loads(event.payload_json or "{}")


# --- the SDK's dicts -> records (the dashboard's mirror of a server) --------------------------


def trial_from_dict(search_id: str, trial: dict[str, Any], seen_at: float) -> TrialRecord:
    """The record of a :func:`trial_dict`. The wire carries no times, params or candidate key:
    ``seen_at`` stands in for the times (finished only when the trial is), the structural hash
    for the key. A server from before the curves were carried sends none: the message's empty
    repeated fields give empty curves."""
    status = Status(trial["status"])
    return TrialRecord(
        id=trial["row_id"],
        search_id=search_id,
        number=trial["trial_id"],
        stage=trial["stage"],
        status=status,
        # Candidate.canonical_json's spelling: the text the server stored
        candidate=json.dumps(trial["candidate"], sort_keys=True, separators=(",", ":")),
        candidate_key=trial["structural_hash"] or "",
        epochs=trial["epochs"],
        rung=trial["rung"],
        structural_hash=trial["structural_hash"],
        functional_hash=trial["functional_hash"],
        metrics=trial["metrics"],
        error=trial["error"],
        reused=trial["reused"],
        seconds=trial["seconds"],
        device=trial["device"],
        host=trial["host"],
        loss_curve=trial["loss_curve"],
        accuracy_curve=trial["accuracy_curve"],
        created_at=seen_at,
        finished_at=None if status in (Status.QUEUED, Status.RUNNING) else seen_at,
    )


def search_from_dict(search: dict[str, Any], task_key: str, spec_json: str) -> SearchRecord:
    """The record of a :func:`search_dict` (its spec's task key and JSON given: computing them
    needs the spec's model, which this module does not load)."""
    return SearchRecord(
        id=search["id"],
        name=search["name"],
        task_key=task_key,
        spec_json=spec_json,
        status=SearchStatus(search["status"]),
        error=search["error"],
        created_at=search["created_at"],
        updated_at=search["updated_at"],
    )
