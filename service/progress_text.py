"""What the progress bars and the status line say about a search, in one place: the client's
bar (``winnow submit --wait``, ``Search.wait(progress=True)``), ``winnow status`` and the bar of
``winnow search run`` all call these.

- :class:`RunningTrials` follows a search's events and names the training runs under way with
  their epochs: ``running #3 epoch 2/9, #4 epoch 1/3`` (a confirmation run with its seed:
  ``#5 seed 2 epoch 1/3``), and the supernet's training while the
  search waits for it (``strategy.supernet``): ``training the supernet, epoch 2/5``.
- :func:`front_text` names one trial's values, never a mix: ``front 3 points; best accuracy:
  #12 accuracy=0.98 model_bytes=8010`` (the front's leader, ``readout.front_leader``). Each
  objective's own best, which usually comes from different trials, is labelled so
  (:func:`per_objective_text`). A confirmed leader (``strategy.confirm``) is labelled as a mean:
  ``best accuracy (confirmed, mean of 3 seeds): #11 ...``, and the status line
  (:func:`status_front_text`) then shows it alone, its hypervolume labelled as the single
  runs' (:func:`hypervolume_label`).
- :func:`ladder_text` names the evidence ladder: ``Kendall tau against 12 screened, completed:
  params 0.61, synflow 0.48 (below params), ensemble 0.66 (n=7)``.

Plain Python over the SDK's dicts and event payloads: no torch, no gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from winnow.records import confirm_seed, front_note

SHOWN_RUNNING = 4  # runs named on a bar; more are counted ("+3 more")
# events after which no run of the search is under way any more (resumed: they start again)
RUN_RESETS = ("search_finished", "search_paused", "search_resumed")


class RunningTrials:
    """The training runs under way, from ``trial_started`` / ``epoch_finished`` / ``trial``
    events (see ``service/engine/journal.py``), by trial id and stage (``train``, or a
    confirmation run's ``confirm:<seed>``: one trial's seeds may run at once):
    ``(epochs done, epochs)``; and the supernet's training from ``supernet_training`` /
    ``supernet_epoch`` events."""

    def __init__(self) -> None:
        self.epochs: dict[tuple[int, str], tuple[int, int]] = {}
        self.supernet: tuple[int, int] | None = None  # (epochs done, epochs) while it trains

    def observe(self, kind: str, payload: Mapping[str, Any]) -> None:
        run = (payload.get("trial_id"), payload.get("stage", "train"))
        if kind == "supernet_training":
            self.supernet = (0, payload.get("epochs", 0))
        elif kind == "supernet_epoch":
            self.supernet = (payload["epoch"], payload["epochs"])
        elif kind in ("supernet_trained", "supernet_failed", "supernet_cancelled"):
            self.supernet = None
        if kind == "trial_started":  # a continued rung starts where its last one ended
            total = payload["epochs"]
            self.epochs[run] = (total - payload.get("epochs_to_run", total), total)
        elif kind == "epoch_finished":
            self.epochs[run] = (payload["epoch"], payload["epochs"])
        elif kind == "trial":  # a screening stage's ends no run (none is under its stage)
            self.epochs.pop(run, None)
        elif kind in RUN_RESETS:
            self.epochs.clear()
            self.supernet = None

    def text(self) -> str:
        """``running #3 epoch 2/9, #4 seed 2 epoch 1/3`` (empty when nothing runs)."""
        if self.supernet is not None:
            done, total = self.supernet
            return f"training the supernet, epoch {done}/{total}"
        if not self.epochs:
            return ""
        runs = [
            f"#{t}{_seed_text(stage)} epoch {done}/{total}"
            for (t, stage), (done, total) in self.epochs.items()
        ]
        more = len(runs) - SHOWN_RUNNING
        shown = ", ".join(runs[:SHOWN_RUNNING]) + (f", +{more} more" if more > 0 else "")
        return f"running {shown}"


def _seed_text(stage: str) -> str:
    """`` seed 2`` for a confirmation run's stage, empty for a rung's."""
    seed = confirm_seed(stage)
    return "" if seed is None else f" seed {seed}"


def objective_names(search: Mapping[str, Any]) -> list[str]:
    """A search dict's objectives in its spec's order (protobuf maps keep none); none from a
    spec that no longer validates and does not list them by name."""
    spec = search.get("spec")
    objectives = spec.get("objectives") if isinstance(spec, dict) else None
    if not isinstance(objectives, list):
        return []
    return [o["name"] for o in objectives if isinstance(o, dict) and isinstance(o.get("name"), str)]


def number(value: float, digits: int) -> str:
    """A whole number as it is (``model_bytes=51790``, not ``5.179e+04``), else ``digits``
    significant digits."""
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _values(values: Mapping[str, float], order: Sequence[str], digits: int, sep: str) -> str:
    names = [n for n in order if n in values] or list(values)
    return sep.join(f"{n}={number(values[n], digits)}" for n in names)


def front_text(progress: Mapping[str, Any], order: Sequence[str], digits: int = 4) -> str:
    """``front 3 points; best accuracy: #12 accuracy=0.98 model_bytes=8010``: the front's size
    and its leader (the front point best on the first objective) with all its values; ``-``
    without completed trials. A server from before leaders sends none: its per-objective bests
    are shown, labelled as such."""
    leader = progress.get("leader")
    if leader is None:
        return per_objective_text(progress, order, digits) or "front -"
    size = progress.get("front_size", 0)
    first = order[0] if order else next(iter(leader["values"]))
    values = _values(leader["values"], order, digits, " ")
    points = f"{size} point{'s' if size != 1 else ''}"
    note = front_note(progress.get("front_epochs"), progress.get("top_epochs") or 0)
    where = f"; {note}" if note else ""  # a lower rung's front says so
    label = f"best {first}{_confirmed(leader)}"  # a confirmed leader's values are means
    return f"front {points}{where}; {label}: #{leader['trial_id']} {values}"


def _confirmed(leader: Mapping[str, Any]) -> str:
    """:func:`confirmed_label` of a leader."""
    return confirmed_label(leader)


def confirmed_label(leader: Mapping[str, Any] | None) -> str:
    """`` (confirmed, mean of 3 seeds)`` for a confirmed leader (``readout.front_leader``:
    its values are means), empty for a single run's: the one wording, which the dashboard
    (``ui.analysis.confirmed_note``) shows too."""
    confirmed = None if leader is None else leader.get("confirmed")
    if confirmed is None:
        return ""
    seeds = confirmed["seeds"]
    return f" (confirmed, mean of {seeds} seed{'s' if seeds != 1 else ''})"


def hypervolume_label(progress: Mapping[str, Any]) -> str:
    """`` (single runs)`` beside the hypervolume once the leader is confirmed: the
    hypervolume is always that of the single runs' front (``readout.pareto``), so beside a
    confirmed mean it is labelled as another measure; empty otherwise."""
    return " (single runs)" if confirmed_label(progress.get("leader")) else ""


def hypervolume_text(progress: Mapping[str, Any], name: str = "HV", digits: int = 4) -> str:
    """``HV 0.71``, or ``HV (single runs) 0.71`` beside a confirmed leader
    (:func:`hypervolume_label`): the progress bars' and the status line's one wording."""
    return f"{name}{hypervolume_label(progress)} {progress['hypervolume']:.{digits}g}"


def status_front_text(progress: Mapping[str, Any], order: Sequence[str], digits: int = 4) -> str:
    """The status line's one statement of the front: :func:`front_text`, and with several
    objectives each one's best (:func:`per_objective_text`), labelled as single runs; once
    the leader is confirmed, its means alone (the single runs' bests are another measure,
    and beside a mean they read as a second answer)."""
    text = front_text(progress, order, digits)
    leader = progress.get("leader")
    if len(order) > 1 and leader is not None and leader.get("confirmed") is None:
        text += "; " + per_objective_text(progress, order, digits)
    return text


def per_objective_text(progress: Mapping[str, Any], order: Sequence[str], digits: int = 4) -> str:
    """``per-objective best (different trials): accuracy=0.98, model_bytes=6992`` (empty
    without completed trials); one objective's best is one trial's, labelled plainly."""
    best = progress.get("best") or {}
    if not best:
        return ""
    if len(best) == 1:
        return f"best {_values(best, order, digits, ', ')}"
    return f"per-objective best (different trials): {_values(best, order, digits, ', ')}"


def confirm_text(progress: Mapping[str, Any], ended: bool = False) -> str:
    """``confirming the front: 4/15 runs`` (``strategy.confirm``), ``front confirmed: 15 runs``
    once done; for a search that ``ended`` short of its plan (its time budget spent, or
    cancelled), ``front partly confirmed: 4/15 runs (each recipe's mean counts the seeds it
    got)``, or with none of them run (the rungs spent the time budget: the engine starts no
    confirmation run then) ``front not confirmed: the time budget was spent before its 15
    runs``; failed (or pruned) runs, which end without counting in any mean, are said:
    ``front confirmed: 15 runs (1 failed)``. Empty before the confirmation began."""
    runs, done = progress.get("confirm_runs") or 0, progress.get("confirm_done") or 0
    failed = progress.get("confirm_failed") or 0
    if not runs:
        return ""
    failures = f"{failed} failed" if failed else ""
    if done >= runs:
        return f"front confirmed: {runs} runs" + (f" ({failures})" if failures else "")
    if ended and not done:
        return f"front not confirmed: the time budget was spent before its {runs} runs"
    if ended:
        notes = [n for n in (failures, "each recipe's mean counts the seeds it got") if n]
        return f"front partly confirmed: {done}/{runs} runs ({'; '.join(notes)})"
    return f"confirming the front: {done}/{runs} runs" + (f" ({failures})" if failures else "")


def ladder_text(progress: Mapping[str, Any], digits: int = 2) -> str:
    """``Kendall tau against 12 screened, completed: params 0.61, synflow 0.48 (below params,
    weight 0), naswot -, ensemble 0.66 (n=7), supernet 0.41 (below params, weight 0), combined
    0.69 (n=6)``: each tier of the evidence ladder with its tau (``-`` while unknown), its
    number of candidates where it is not the most, and whether its stage's latest calibrated fit
    gave it weight 0; empty until some tier has a tau. "Screened": a reused result is not
    counted, so the number can be below the completed counter's."""
    ladder = progress.get("evidence_ladder") or []
    if not any(t["tau"] is not None for t in ladder):
        return ""
    most = max(t["n"] for t in ladder)
    parts = []
    for t in ladder:
        notes = [f"n={t['n']}"] if t["n"] != most else []
        notes += ["below params"] if t["below_params"] else []
        notes += ["weight 0"] if t.get("zero_weight") else []
        tau = "-" if t["tau"] is None else f"{t['tau']:.{digits}f}"
        parts.append(f"{t['tier']} {tau}" + (f" ({', '.join(notes)})" if notes else ""))
    return f"Kendall tau against {most} screened, completed: " + ", ".join(parts)
