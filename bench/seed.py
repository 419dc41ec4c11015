"""A realistic stored search without running one: :func:`seed_search` writes real candidates
sampled from the digits joint space (or another), walked through the cascade's stages
(``winnow.service.engine.cascade``) with synthetic evidence behind them (metrics made by a
small model of the recipe), as rows and events in a store; with ``strategy.confirm`` in its
``changes``, the front's confirmation runs too (:func:`_confirm`: rows as the engine's
``Confirmation`` writes them). ``winnow bench ui`` and the dashboard's tests seed their stores
with it."""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from winnow.records import EventRecord, TrialRecord, confirm_stage
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.trial import Status, TrialResult
from winnow.service.engine.cascade import (
    MemoryHashMemo,
    Passage,
    Proposal,
    cascade_stages,
    run_stages,
)
from winnow.service.engine.confirmed import (
    confirm_seeds,
    confirmed_figures,
    row_identity,
    to_confirm,
)
from winnow.service.engine.journal import finite, trial_row
from winnow.service.engine.pareto import search_hypervolume
from winnow.service.engine.readout import GrowingFront, front_trials, objective_values
from winnow.service.engine.state import Tracked
from winnow.service.search_spec import SearchSpec, parse_search_spec
from winnow.service.store import Store

# --- the synthetic model of a recipe ------------------------------------------------------------


def _params(candidate: dict[str, Any]) -> tuple[int, int]:
    """(hidden, head) parameter counts of a digits MLP (64 inputs, 10 classes); other families
    get a size drawn from their key, as only the MLP's is cheap to write down."""
    arch = candidate["architecture"]
    if arch.get("family") != "mlp":
        rng = np.random.default_rng(zlib.crc32(json.dumps(arch, sort_keys=True).encode()))
        return int(rng.integers(50_000, 1_500_000)), 650
    width, depth = arch["width"], arch["depth"]
    hidden = 64 * width + width + (depth - 1) * (width * width + width)
    return hidden, width * 10 + 10


def _bits(candidate: dict[str, Any]) -> tuple[dict[str, int], int]:
    quant = candidate.get("quantization") or {}
    bits = quant.get("weight_bits", 32)
    return (bits if isinstance(bits, dict) else {"*": bits}), quant.get("activation_bits", 32)


def _quality(candidate: dict[str, Any], rng: np.random.Generator) -> float:
    """A converged accuracy: wider and deeper help, normalization and a sensible learning rate
    help, low bits hurt; plus noise, so the front is not a formula."""
    arch, opt = candidate["architecture"], candidate["optimizer"]
    weight_bits, activation_bits = _bits(candidate)
    quality = 0.86 + 0.025 * np.log2(arch.get("width", 64) / 64) + 0.01 * arch.get("depth", 1)
    quality += {"batchnorm": 0.02, "layernorm": 0.012, "rmsnorm": 0.01}.get(
        candidate.get("normalization", "none"), -0.02
    )
    good_lr = {"sgd": 0.08, "adamw": 0.003, "lion": 3e-4}.get(opt["name"], 0.01)
    quality -= 0.02 * abs(np.log10(opt["lr"] / good_lr))
    quality -= 0.05 * (min(weight_bits.values()) <= 4) + 0.01 * (activation_bits <= 8)
    return float(quality + rng.normal(0, 0.012))


# the per-epoch values a training row keeps in columns of their own, not among its metrics
CURVES = ("loss_curve", "accuracy_curve")


def _train_metrics(candidate: dict, quality: float, epochs: int, rng) -> dict[str, Any]:
    hidden, head = _params(candidate)
    weight_bits, _ = _bits(candidate)
    bits = weight_bits.get("hidden", weight_bits.get("*", 32))
    head_bits = weight_bits.get("head", weight_bits.get("*", 32))
    noise = rng.normal(0, 0.005)
    per_epoch = quality - 0.25 * np.exp(-np.arange(1, epochs + 1) / 2.0) + noise
    per_epoch = np.clip(per_epoch, 0.1, 0.995)  # the last epoch's is the final accuracy
    curve = 2.3 * np.exp(-np.arange(1, epochs + 1) / 1.5) + (1 - quality) + rng.normal(0, 0.01)
    return {
        "accuracy": float(per_epoch[-1]),
        "params": hidden + head,
        "model_bytes": int(hidden * bits / 8 + head * head_bits / 8),
        "latency_ms": float(0.05 + hidden / 2e6 + rng.normal(0, 0.005) ** 2),
        # the loss per epoch, which the row keeps in its own column
        "loss_curve": [round(float(v), 4) for v in curve],
        "accuracy_curve": [float(v) for v in per_epoch],
    }


def _proxy_metrics(candidate: dict, quality: float, rng) -> dict[str, float]:
    hidden, head = _params(candidate)
    return {
        "proxy.synflow": float(np.log(hidden + head) * 3 + rng.normal(0, 1.0)),
        "proxy.naswot": float(400 * quality + rng.normal(0, 6.0)),
        "proxy.params": float(hidden + head),
    }


# --- the walk through the stages ------------------------------------------------------------------


class _Sample:
    """A sampled candidate, serialised and hashed once (samplers repeat candidates)."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate
        self.json, self.key = candidate.canonical_json(), candidate.key
        self.data = json.loads(self.json)
        self.structural = structural_hash(candidate)


@dataclass
class _Seeded(Proposal):
    sample: _Sample | None = None
    quality: float = 0.0  # the converged accuracy the proxy stage drew


def _seeded_hash(proposal: Proposal) -> str:
    return "f" + proposal.structural[:15]  # no real functional hash: equal structure, equal hash


class _Seeder:
    """The evidence behind the stages (``cascade.Twins``, ``Scorer``, ``Rule``, ``Trainer``,
    ``Outcomes``), as the engine would see it: hash hits become ``duplicate`` rows, the proxy
    screen keeps the better half of the recent population, rung 0 trains 2 epochs, the best
    third of rung 0 goes on to 6 epochs."""

    def __init__(self, spec: SearchSpec, search_id: str, rng, start: float) -> None:
        self.spec, self.search_id, self.rng, self.clock = spec, search_id, rng, start
        self.rows: list[TrialRecord] = []
        self.events: list[EventRecord] = []
        self.screen_scores: list[float] = []
        self.rung0: list[float] = []
        self.done: dict[str, dict] = {}  # top-rung metrics by structural hash
        self.proposals: dict[int, _Seeded] = {}  # by number, for the confirmation runs
        self.points: list[list[float]] = []
        self.front = GrowingFront(spec.objectives)
        memo = MemoryHashMemo()
        self.stages = cascade_stages(memo, self, self, self, self, compute_hash=_seeded_hash)

    def propose(self, number: int, sample: _Sample) -> None:
        proposal = _Seeded(number, sample.candidate, sample.structural, sample=sample)
        self.proposals[number] = proposal
        run_stages(self.stages, proposal, Passage(self))

    def row(
        self, proposal, stage, epochs, rung, status, metrics, seconds, error=None, reused=False
    ):
        self.clock += seconds + float(self.rng.exponential(0.05))
        sample = proposal.sample
        self.rows.append(
            TrialRecord(
                id=None,
                search_id=self.search_id,
                number=proposal.number,
                stage=stage,
                epochs=epochs,
                rung=rung,
                status=Status(status),
                candidate=sample.json,
                candidate_key=sample.key,
                structural_hash=sample.structural,
                functional_hash=proposal.functional,
                metrics={k: v for k, v in metrics.items() if k not in CURVES},
                loss_curve=metrics.get("loss_curve", []),
                accuracy_curve=metrics.get("accuracy_curve", []),
                error=error,
                reused=reused,
                seconds=seconds,
                device="cpu",
                host="seed",
                created_at=self.clock - seconds,
                finished_at=self.clock,
            )
        )
        if stage != "proxy":
            self.event("trial", {"number": proposal.number, "stage": stage, "status": status})

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        self.events.append(EventRecord(None, self.search_id, self.clock, kind, payload))

    # --- cascade.Twins, Scorer, Rule, Trainer ---------------------------------------------------

    def find(self, proposal: _Seeded, passage: Passage) -> TrialResult | None:
        metrics = self.done.get(proposal.structural)
        return None if metrics is None else TrialResult(Status.OK, metrics)

    def scores(self, proposal: _Seeded, passage: Passage) -> TrialResult:
        proposal.quality = _quality(proposal.sample.data, self.rng)
        if self.rng.random() < 0.01:
            return TrialResult(Status.FAILED, error="proxy failed", seconds=0.02)
        metrics = _proxy_metrics(proposal.sample.data, proposal.quality, self.rng)
        return TrialResult(Status.OK, metrics, seconds=0.1)

    def judge(self, proposal: _Seeded, scores: TrialResult) -> TrialResult:
        metrics = dict(scores.metrics)
        score = metrics["proxy.naswot"] / 100 - metrics["proxy.params"] / 1e6
        recent = self.screen_scores[-200:]
        self.screen_scores.append(score)
        kept = len(recent) < 10 or score >= float(np.quantile(recent, 0.5))
        metrics["screen.score"] = score
        if kept:
            return TrialResult(Status.OK, metrics, seconds=scores.seconds)
        error = "proxy screen: below the kept half"
        return TrialResult(Status.PRUNED, metrics, error=error, seconds=scores.seconds)

    def start(self, proposal: _Seeded, passage: Passage) -> None:
        rungs = self.spec.strategy.rungs
        for rung, epochs in enumerate(rungs):
            if self.rng.random() < 0.03:
                error = "non-finite loss at epoch 1"
                self.row(proposal, "train", epochs, rung, "failed", {}, 0.3 * epochs, error)
                return
            metrics = _train_metrics(proposal.sample.data, proposal.quality, epochs, self.rng)
            self.row(proposal, "train", epochs, rung, "ok", metrics, 0.5 * epochs)
            if rung == len(rungs) - 1:
                self.done[proposal.structural] = metrics
                return self.complete(proposal.number, metrics)
            self.rung0.append(metrics["accuracy"])
            if metrics["accuracy"] < float(np.quantile(self.rung0[-300:], 2 / 3)):
                return

    # --- cascade.Outcomes -----------------------------------------------------------------------

    def reused(self, proposal: _Seeded, result: TrialResult) -> None:
        rungs = self.spec.strategy.rungs
        top = len(rungs) - 1
        self.row(proposal, "train", rungs[top], top, "duplicate", result.metrics, 0.0, reused=True)
        self.complete(proposal.number, result.metrics)

    def failed(self, proposal: _Seeded, stage: str, result: TrialResult) -> None:
        self.row(proposal, stage, 0, -1, "failed", {}, result.seconds, result.error)

    def screened(self, proposal: _Seeded, stage: str, result: TrialResult) -> None:
        status, seconds = str(result.status), result.seconds
        self.row(proposal, stage, 0, -1, status, result.metrics, seconds, result.error)

    def complete(self, number: int, metrics: dict) -> None:
        """The engine's ``front`` event: the hypervolume after each completion."""
        point = objective_values(self.spec.objectives, metrics)
        self.points.append(point)
        self.event("front", {"number": number, "hypervolume": self.front.add(point)})


# --- strategy.confirm: the front's confirmation runs --------------------------------------------


def _confirm(seeder: _Seeder) -> None:
    """The confirmation of the front, when the spec asks for it, as ``Confirmation.run``
    writes it: the pairs of trial and seed the engine plans (``confirmed.to_confirm``,
    ``confirm_seeds``), each a row built by the engine's own ``journal.trial_row`` (stage
    ``confirm:<seed>``, the top rung's epochs and rung, metrics ``finite`` as
    ``Confirmation.record`` keeps them) with the journal's ``trial_started`` and ``trial``
    events, between ``confirm_started`` and ``confirm_finished`` ``{confirmed}`` (the figures,
    ``confirmed.confirmed_figures``). Each run draws the recipe's quality afresh: the run that
    put it on the front was selected for its luck (the winner's curse), so the means fall back
    and some recipes fall off the front."""
    spec = seeder.spec
    if spec.strategy.confirm is None:
        return
    _, front = front_trials(spec, seeder.rows)
    ids, points = [c.trial_id for c in front], [c.values for c in front]
    numbers = to_confirm(spec, ids, points, [row_identity(c.row) for c in front])
    seeds, top = confirm_seeds(spec), len(spec.strategy.rungs) - 1
    payload = {"trials": sorted(numbers), "seeds": seeds, "runs": len(numbers) * len(seeds)}
    seeder.event("confirm_started", payload | {"done": 0})
    runs = []
    for number in numbers:
        proposal = seeder.proposals[number]
        tracked = Tracked(number, proposal.candidate, proposal.structural, proposal.functional)
        for seed in seeds:
            runs.append(_confirm_row(seeder, tracked, seed, top))
    seeder.rows.extend(runs)
    figures = confirmed_figures(spec, runs)
    confirmed = {str(number): result for number, result in figures.items()}  # JSON keys
    seeder.event("confirm_finished", {"confirmed": confirmed})


def _confirm_row(seeder: _Seeder, tracked: Tracked, seed: int, top: int) -> TrialRecord:
    """One confirmation run of ``tracked``, finished ``ok`` at the seeder's clock, and its
    events as ``Journal.started`` and ``Journal.update`` write them (no ``row``: the rows get
    their ids when stored, after the walk)."""
    epochs, stage = seeder.spec.strategy.rungs[top], confirm_stage(seed)
    started = {"trial_id": tracked.number, "rung": top, "epochs": epochs}
    started |= {"epochs_to_run": epochs, "stage": stage, "seed": seed}
    seeder.event("trial_started", started | {"candidate": tracked.candidate.describe()})
    data = json.loads(tracked.candidate.canonical_json())
    metrics = _train_metrics(data, _quality(data, seeder.rng), epochs, seeder.rng)
    curve, accuracy = metrics.pop("loss_curve"), metrics.pop("accuracy_curve")
    seconds = 0.5 * epochs
    result = TrialResult(
        Status.OK, finite(metrics), curve, seconds=seconds, host="seed", accuracy_curve=accuracy
    )
    row = trial_row(seeder.search_id, tracked, stage, epochs, top, "ok", result, False)
    seeder.clock += seconds + float(seeder.rng.exponential(0.05))
    ended = {"trial_id": tracked.number, "rung": top, "stage": stage, "status": "ok"}
    seeder.event("trial", ended | {"metrics": row.metrics})
    return dataclasses.replace(row, created_at=seeder.clock - seconds, finished_at=seeder.clock)


def seed_search(
    store: Store,
    trials: int,
    seed: int = 0,
    status: str = "finished",
    space: str | None = None,
    changes: dict[str, Any] | None = None,
    confirm: bool = True,
) -> str:
    """Store a search of ``trials`` proposals (see :class:`_Seeder`); returns its id. About 5%
    of proposals repeat an earlier candidate, as samplers do, and become hash hits. ``changes``:
    spec sections that replace the demo's (``objectives``: any of accuracy, params, model_bytes,
    latency_ms; ``name``; ``strategy``, whose rungs the walk follows and whose ``confirm``
    adds the front's confirmation runs to a finished search: :func:`_confirm`); ``confirm``
    False leaves them out (the front as it stands before its confirmation, for tests that
    write runs of their own)."""
    # the demo's search (imported here: demo.py loads gRPC, which other commands need not)
    from winnow.service.demo import DEMO_SPEC

    data = {**DEMO_SPEC, "name": "seeded-digits", "space": space or DEMO_SPEC["space"]}
    data |= changes or {}
    spec = parse_search_spec(data | {"seed": seed, "budget": {"max_trials": trials}})
    rng = np.random.default_rng(seed)
    search_id = store.create_search(spec.name, spec.task.key, spec.to_json(), status=status)
    samples = [_Sample(c) for c in spec.search_space.sample(trials, seed=seed)]
    seeder = _Seeder(spec, search_id, rng, start=time.time() - 2.0 * trials)
    seeder.event("search_started", {"name": spec.name})
    for number, sample in enumerate(samples):
        if number > 20 and rng.random() < 0.05:
            sample = samples[int(rng.integers(0, number))]
        seeder.propose(number, sample)
    if status == "finished":
        if confirm:
            _confirm(seeder)
        trained = sum(1 for r in seeder.rows if r.stage == "train" and not r.reused)
        hv = search_hypervolume(spec.objectives, seeder.points)
        seeder.event("search_finished", {"status": status, "trained": trained, "hv": hv})
    with store.batch():
        store.add_trials(seeder.rows)
        store.add_events(seeder.events)
    return search_id
