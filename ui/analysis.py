"""What the pages show, computed from the frames of the store's ``reads``: recipes' axes, the
front, hypervolume and best-so-far histories, the cascade's funnel, proxy correlations.
Plain functions of frames and dicts (no Streamlit), so tests call them directly."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from winnow.records import TrialRecord, epochs_text
from winnow.service import progress_text
from winnow.service.engine import readout
from winnow.service.engine.pareto import as_losses
from winnow.service.search_spec import Objective, SearchSpec
from winnow.service.store import reads


def front_rows(trained: pd.DataFrame, rungs: int) -> tuple[int | None, pd.DataFrame]:
    """The rung the front is made of (``readout.front_rung``: the top rung once a trial
    completed, else the highest reached) and the rows of ``reads.trained`` at it."""
    by_rung = reads.by_rung(trained, rungs)
    rung = readout.front_rung(by_rung)
    return rung, (trained.iloc[0:0] if rung is None else by_rung[rung])


def front_figures(
    spec: SearchSpec,
    trained: pd.DataFrame,
    runs: Sequence[TrialRecord],
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
) -> dict[int, dict[str, Any]] | None:
    """The confirmation figures of the front's trials (``readout.listed_confirmation``) from
    the page's reads: ``trained`` (the search's ``reads.trained``), its confirmation rows
    (``reads.confirmation_runs``) and the front's fidelity's ``trial_ids`` and ``points``;
    None without confirmation."""
    return readout.listed_confirmation(spec, runs, trained, trial_ids, points)[1]


def leader(
    spec: SearchSpec,
    trained: pd.DataFrame,
    runs: Sequence[TrialRecord],
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
    figures: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The front's leader (``readout.front_leader``) from the page's reads (as
    :func:`front_figures` takes them; ``figures``: its answer, when the caller has it): once
    the front is confirmed, the best confirmed mean (``readout.ranked_front``'s first), as
    ``winnow pareto``, ``export`` and the server's ``ListSearches`` lead."""
    if figures is None:
        figures = front_figures(spec, trained, runs, trial_ids, points)
    return readout.front_leader(spec.objectives, points, trial_ids, figures)[1]


CONFIRMED, FELL_OFF, SINGLE = "confirmed", "fell off when confirmed", "not confirmed"


def confirmed_front(
    objectives: Sequence[Objective],
    trial_ids: Sequence[int],
    points: Sequence[Sequence[float]],
    figures: dict[int, dict[str, Any]] | None,
) -> pd.DataFrame:
    """The front as ``winnow pareto`` ranks it (``readout.ranked_front``: confirmed recipes
    still on the front, then the unconfirmed points, then those that fell off), one row per
    point: ``number``, ``standing`` (:data:`CONFIRMED`, :data:`FELL_OFF` or :data:`SINGLE`:
    judged among the confirmed means only, as ``readout`` judges it), ``dominated_by`` (for
    a confirmed recipe, the first unconfirmed single run of the front that dominates its
    means: :func:`dominating_single_runs`; else None), ``seeds`` (the successful
    confirmation runs; 0 for a single run) and per objective its value (a confirmed recipe's
    mean), ``<name> std``, ``<name> lower`` (the one-sided 95 % bound on the bad side:
    ``confirmed.figures``' ``lower``, above the mean for a minimised objective) and ``<name>
    single run`` (the run that put it on the front). Empty without ``figures`` (a search
    without confirmation looks as before)."""
    if not figures:
        return pd.DataFrame()
    ranked = readout.ranked_front(objectives, points, trial_ids, figures)
    beaten = dominating_single_runs(objectives, ranked)
    rows = []
    for point in ranked:
        found = point.confirmed or {}
        standing = {True: CONFIRMED, False: FELL_OFF}.get(point.on_confirmed_front, SINGLE)
        row: dict[str, Any] = {"number": point.trial_id, "standing": standing}
        row["dominated_by"] = beaten.get(point.trial_id)
        row["seeds"] = found.get("seeds", 0)
        for k, o in enumerate(objectives):
            mine = found.get(o.name, {})
            row[o.name] = point.values[k]
            row[f"{o.name} std"] = mine.get("std")
            row[f"{o.name} lower"] = mine.get("lower")
            row[f"{o.name} single run"] = float(points[point.index][k])
        rows.append(row)
    return pd.DataFrame(rows)


def dominating_single_runs(
    objectives: Sequence[Objective], ranked: Sequence[readout.FrontPoint]
) -> dict[int, int]:
    """Confirmed trial -> the first unconfirmed point of the front (in ``ranked``'s order,
    ``readout.ranked_front``) whose single run dominates its means. ``readout`` judges a
    confirmed recipe's standing among the confirmed means only, so a recipe shown
    "confirmed" may still be beaten by a lucky run nobody re-trained: this says so (a
    single run is an optimistic figure, so it is a warning, not a verdict)."""
    singles = [p for p in ranked if p.confirmed is None]
    confirmed = [p for p in ranked if p.confirmed is not None]
    if not singles or not confirmed:
        return {}
    directions = [o.direction for o in objectives]
    runs = as_losses([p.values for p in singles], directions)
    out = {}
    for point in confirmed:
        mine = as_losses([point.values], directions)[0]
        beats = (runs <= mine).all(1) & (runs < mine).any(1)  # pareto's dominance, one row
        if beats.any():
            out[point.trial_id] = singles[int(np.argmax(beats))].trial_id
    return out


def confirmed_note(leader: dict[str, Any] | None) -> str:
    """`` (confirmed, mean of 3 seeds)`` for a confirmed leader, empty for a single run's
    (``progress_text.confirmed_label``: the CLI's wording)."""
    return progress_text.confirmed_label(leader)


def weight_bits_label(bits: Any) -> str:
    """ "8" when every layer has 8 weight bits, "4-32" for a mix, "32" for float."""
    values = list(bits.values()) if isinstance(bits, dict) else [bits]
    low, high = min(values, default=32), max(values, default=32)
    return str(low) if low == high else f"{low}-{high}"


def recipe_axes(candidate: dict[str, Any]) -> dict[str, Any]:
    """The values the dashboard colours and filters by."""
    quant = candidate.get("quantization") or {}
    return {
        "family": candidate.get("architecture", {}).get("family", "?"),
        "normalization": candidate.get("normalization", "?"),
        "optimizer": (candidate.get("optimizer") or {}).get("name", "?"),
        "weight_bits": weight_bits_label(quant.get("weight_bits", 32)),
        "activation_bits": str(quant.get("activation_bits", 32)),
    }


def describe(candidate: dict[str, Any]) -> str:
    """One line per axis, for hover text."""
    opt = candidate.get("optimizer", {})
    shape = readout.architecture_view(candidate.get("architecture", {})).summary
    axes = recipe_axes(candidate)
    lr = opt.get("lr")
    optimizer = f"{axes['optimizer']} lr {lr:.2g}" if isinstance(lr, float) else axes["optimizer"]
    bits = f"weights {axes['weight_bits']} bit, activations {axes['activation_bits']} bit"
    return "<br>".join([shape, axes["normalization"], optimizer, bits])


# The costs a training row measures (``training.static_metrics`` and what ``evaluate`` adds),
# in the order a reader compares recipes by; the proxies' and the screen's columns come after.
COST_METRICS = ("params", "flops", "bitops", "model_bytes", "latency_ms", "peak_memory_bytes")


def metric_columns(names: Sequence[str], objectives: Sequence[str]) -> list[str]:
    """The metric columns of a trial's rows in reading order: its objectives (accuracy first
    when it is one, or is measured), the costs, the other measurements (``epochs_run``), then
    the proxies' and the screen's values (``proxy.*``, ``screen.*``), which rank candidates
    before training but are not what a recipe scores."""
    names = list(dict.fromkeys(names))
    lead = [n for n in dict.fromkeys(["accuracy", *objectives, *COST_METRICS]) if n in names]
    late = [n for n in names if n.startswith(("proxy.", "screen."))]
    return lead + [n for n in names if n not in lead and n not in late] + late


def fidelity_label(stage: str, epochs: int) -> str:
    """``proxy``, ``train:6``: the key the table filters by (``reads.TableQuery``)."""
    return f"{stage}:{epochs}" if stage == "train" else stage


def expand(frame: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """Rows of ``reads.trained`` with their objective values, axes and hover text as columns;
    rows missing an objective are dropped (they cannot be drawn)."""
    if frame.empty:
        return pd.DataFrame(columns=[*frame.columns, *objectives, "fidelity", "recipe"])
    metrics = list(frame["metrics"])
    out = frame.drop(columns=["metrics", "candidate"]).reset_index(drop=True)
    for name in objectives:
        out[name] = [float(m[name]) if name in m else np.nan for m in metrics]
    # a candidate's rungs share its JSON: parse and describe each text once
    unique = {text: json.loads(text) for text in frame["candidate"].unique()}
    per_text = {text: (recipe_axes(c), describe(c)) for text, c in unique.items()}
    described = [per_text[text] for text in frame["candidate"]]
    out = pd.concat([out, pd.DataFrame([axes for axes, _ in described])], axis=1)
    out["fidelity"] = [epochs_text(e) for e in out["epochs"]]
    out["recipe"] = [text for _, text in described]
    return out.dropna(subset=list(objectives)).reset_index(drop=True)


def history(done: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Best value of each objective and the hypervolume after each completed trial, in
    completion order (``readout.hypervolume_history``: the engine's reference point, which may
    move with the worst value so far)."""
    names, directions = [o.name for o in objectives], [o.direction for o in objectives]
    values = done[names].to_numpy(dtype=float)
    times = done["finished_at"].to_numpy()
    out = pd.DataFrame({"completed": np.arange(1, len(done) + 1), "time": times})
    for k, (name, direction) in enumerate(zip(names, directions, strict=True)):
        best = np.maximum if direction == "maximize" else np.minimum
        out[f"best {name}"] = best.accumulate(values[:, k]) if len(values) else []
    out["hypervolume"] = readout.hypervolume_history(objectives, values.tolist())
    return out


def progress(
    counts: pd.DataFrame, proposals: int, hypervolume_value: float, starts: Sequence[int] = ()
) -> dict[str, Any]:
    """``readout.progress``'s counters (``readout.tally``) from the grouped counts of
    ``reads.counts``; ``starts``: the epoch each rung starts from (``readout.rung_starts``)."""
    return {
        **readout.tally(reads.tally_groups(counts), proposals, starts),
        "hypervolume": hypervolume_value,
    }


def funnel(counts: pd.DataFrame, rungs: Sequence[int], proposals: int) -> pd.DataFrame:
    """The cascade, stage by stage: how many candidates reached each one, and why the others
    stopped (hash hits, the proxy screen, failures)."""
    train = counts[counts["stage"] == "train"]
    proxy = counts[counts["stage"] == "proxy"]
    duplicates = int(train.loc[train["reused"].astype(bool), "rows"].sum())
    stages = [
        ("proposed", proposals),
        ("new (not a hash hit)", proposals - duplicates),
        ("scored by proxies", int(proxy["rows"].sum())),
        ("kept by the proxy screen", int(proxy.loc[proxy["status"] == "ok", "rows"].sum())),
    ]
    for rung, epochs in enumerate(rungs):
        ran = train[(train["rung"] == rung) & ~train["reused"].astype(bool)]
        stages.append((f"trained at rung {rung} ({epochs_text(epochs)})", int(ran["rows"].sum())))
    out = pd.DataFrame(stages, columns=["stage", "candidates"])
    out.attrs["duplicates"] = duplicates
    out.attrs["screened_out"] = int(proxy.loc[proxy["status"] == "pruned", "rows"].sum())
    return out


def proxy_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate number, one column per proxy metric (``proxy.*``, ``screen.*``),
    from the proxy rows of ``reads.screening_scores``."""
    scores = scores[scores["stage"] == "proxy"] if "stage" in scores else scores
    if scores.empty:
        return pd.DataFrame(columns=["number"])
    metrics = pd.DataFrame(list(scores["metrics"]))
    metrics.insert(0, "number", scores["number"].to_numpy())
    keep = ["number", *[c for c in metrics.columns if _proxy_column(c)]]
    return metrics[keep].drop_duplicates("number", keep="last")


def _proxy_column(name: str) -> bool:
    """A proxy's value or the screen's score and position; not the screen's flags (whether a
    calibrated ensemble scored, which proxies it zeroed), which rank nothing."""
    if readout.is_screen_flag(name):
        return False
    return name.startswith(("proxy.", "screen."))


GROWTH = 0.05  # a live search's importance and parameter plots are redrawn as results grow 5 %


def size_bucket(n: int, growth: float = GROWTH) -> int:
    """``n`` rounded to a geometric step of ``growth``: the same bucket until it grows by about
    that much (a cache key that a live search's every new result does not change)."""
    return 0 if n < 1 else int(math.log(n) / math.log1p(growth))


def parameter_table(
    numbers: Sequence[int],
    metrics: Sequence[dict],
    decided: Sequence[dict[str, Any]],
    objectives: Sequence[str],
) -> pd.DataFrame:
    """One row per trained result: ``number``, its objectives' values, then each decision that
    takes more than one value among them (a fixed one says nothing), by decision path; rows
    missing an objective are dropped (they cannot be drawn)."""
    out = pd.DataFrame({"number": list(numbers)})
    for name in objectives:
        out[name] = [float(m[name]) if m.get(name) is not None else np.nan for m in metrics]
    params = pd.DataFrame(list(decided), index=out.index)
    # dropna first: astype(str) turns NaN into "nan" (pandas < 3), a value of its own
    varying = [c for c in params.columns if params[c].dropna().astype(str).nunique() > 1]
    out = pd.concat([out, params[varying]], axis=1)
    return out.dropna(subset=list(objectives)).reset_index(drop=True)


def is_numeric(values: pd.Series) -> bool:
    """Numbers (not booleans, which are choices): drawn on a numeric axis."""
    kept = values.dropna()
    return len(kept) > 0 and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_) for v in kept
    )


WIDE_SPAN = 1e3  # values whose magnitudes span three orders or more get a logarithmic axis


def axis_scale(values: Sequence[float]) -> str:
    """``linear``; ``log`` for positive values spanning orders of magnitude (synflow reaches
    1e49 while other candidates score 1e3); ``symlog`` for such values of both signs or with
    zeros, which a log axis cannot draw (:func:`symlog`)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    magnitudes = np.abs(x[x != 0])
    if len(magnitudes) < 2 or magnitudes.max() < WIDE_SPAN * magnitudes.min():
        return "linear"
    return "log" if (x > 0).all() else "symlog"


def symlog(values: Sequence[float], threshold: float) -> np.ndarray:
    """``sign(x) log10(1 + |x| / threshold)``: monotone, so ranks (and the rank correlations)
    are those of ``x``; about linear below ``threshold``, logarithmic above; defined at 0 and
    for negative values, unlike a log axis (matplotlib's ``symlog`` scale, which plotly lacks)."""
    x = np.asarray(values, dtype=float)
    return np.sign(x) * np.log10(1 + np.abs(x) / threshold)


def symlog_threshold(values: Sequence[float]) -> float:
    """The smallest non-zero magnitude: every value above it is drawn on the log part."""
    x = np.abs(np.asarray(values, dtype=float))
    x = x[np.isfinite(x) & (x != 0)]
    return float(x.min()) if len(x) else 1.0


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, float | int | None]:
    """Spearman's and Kendall's rank correlations (None with fewer than three finite pairs)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": int(len(x)), "spearman": None, "kendall": None}
    spearman = stats.spearmanr(x, y).statistic
    kendall = stats.kendalltau(x, y).statistic
    return {"n": int(len(x)), "spearman": float(spearman), "kendall": float(kendall)}


def worker_lanes(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of ``reads.runs`` with ``started`` (``finished_at`` less ``seconds``), ``lane``
    and ``machine``: each machine (host and device) gets as many lanes as it ran runs at once,
    a run going to the first lane free when it started (interval partitioning), so a lane reads
    as one worker's runs one after another."""
    out = runs.assign(started=runs["finished_at"] - runs["seconds"]).sort_values(
        ["started", "finished_at"], kind="stable"
    )
    host, device = out["host"].fillna("?"), out["device"].fillna("?")  # not recorded
    machines = [f"{h or '?'} · {d or '?'}" for h, d in zip(host, device, strict=True)]
    ends: dict[str, list[float]] = {}  # per machine: when each lane's last run finished
    lanes = []
    for machine, start, end in zip(machines, out["started"], out["finished_at"], strict=True):
        slots = ends.setdefault(machine, [])
        free = next((k for k, last in enumerate(slots) if last <= start), len(slots))
        slots[free : free + 1] = [end]
        lanes.append(f"{machine} #{free + 1}")
    return out.assign(machine=machines, lane=lanes).reset_index(drop=True)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_paths(candidates: Sequence[dict[str, Any]]) -> list[str]:
    """The JSON paths (``optimizer.lr``, ``architecture.width``) where some candidate holds a
    number: what the trial table's ranges filter on (``reads.TableQuery.ranges``)."""
    found: set[str] = set()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif _number(value):
            found.add(path)

    for candidate in candidates:
        walk(candidate, "")
    return sorted(found)


def numeric_metrics(metrics: Sequence[dict[str, Any]]) -> list[str]:
    """The metric names some row holds a number for, in ``metric_columns``' reading order."""
    names = {name for m in metrics for name, value in m.items() if _number(value)}
    return metric_columns(sorted(names), [])


def curve_rows(trained: pd.DataFrame, objective: str, direction: str, lines: int) -> pd.DataFrame:
    """The trained results whose per-epoch curves the Search page draws: those of the front's
    rung (``front_rung``: every one trained as long), the best ``lines`` by ``objective``."""
    rows = trained[trained["front_rung"]]
    ascending = direction == "minimize"
    return rows.sort_values(objective, ascending=ascending, kind="stable").head(lines)
