"""The Searches page's table: one row per search, from two aggregate queries over every
search and the trained results of all searches (read once)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from winnow.service.engine import readout
from winnow.service.engine.pareto import search_hypervolume
from winnow.service.store import Store, reads
from winnow.ui import analysis

# What each count of the table counts (``readout``'s definitions), shown as column help.
COLUMN_HELP = {
    "candidates": "Candidates sent to training, of budget.max_trials: each counts once, at its "
    "first rung, however many rungs it reaches; a hash hit reuses a result and is not one.",
    "proposals": "Candidates the sampler proposed: the sent to training, the hash hits, and "
    "those the proxy screen pruned or that failed before training.",
    "completed": "Candidates with a trained result at the top rung (trained there, or a hash "
    "hit reusing one): the front is made of these. Those stopped at a lower rung by "
    "successive halving count as sent to training but not as completed.",
    "leader": "The front's best trial on the first objective, with its other values; once "
    "the front is confirmed (strategy.confirm), the best confirmed recipe by its means over "
    "its confirmation seeds, as winnow pareto and export rank it.",
    "hypervolume": "The hypervolume of the front at the top rung's completed trials or, while "
    "none has completed, at the highest rung reached (the Search page names the rung): of "
    "the single runs (each trial trained once) also once the front is confirmed, whose "
    "leader's values are means over seeds.",
}


def _when(seconds: float | None) -> str:
    return "" if seconds is None else datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def overview(store: Store) -> pd.DataFrame:
    searches = store.searches()
    proposals = reads.proposals(store)
    trained = reads.trained(store)
    all_counts = reads.counts(store)
    runs: dict[str, list] = {}  # each search's confirmation rows (strategy.confirm)
    for run in reads.confirmation_runs(store):
        runs.setdefault(run.search_id, []).append(run)
    rows = []
    for search in sorted(searches, key=lambda s: s.created_at, reverse=True):
        stored = readout.stored_spec(search.spec_json)  # a stand-in when no longer valid
        spec = stored.spec
        names = [o.name for o in spec.objectives]
        mine = trained[trained["search_id"] == search.id]
        mine = mine if names else mine.iloc[0:0]  # a stand-in without objectives: no front
        rungs = len(spec.strategy.rungs)
        completed = len(reads.completed(mine, rungs - 1))
        done = analysis.expand(analysis.front_rows(mine, rungs)[1], names)  # the front's rung
        points = done[names].to_numpy(float).tolist()
        counts = all_counts[all_counts["search_id"] == search.id].drop(columns="search_id")
        hypervolume = search_hypervolume(spec.objectives, points)
        starts = readout.rung_starts(spec.strategy)
        progress = analysis.progress(counts, proposals.get(search.id, 0), hypervolume, starts)
        ids = done["number"].tolist()
        leader = analysis.leader(spec, mine, runs.get(search.id, []), ids, points)
        rows.append(
            {
                "id": search.id,
                "name": search.name,
                "status": str(search.status),
                "candidates": f"{progress['candidates']} / {spec.budget.max_trials}",
                "proposals": progress["proposals"],
                "completed": completed,
                "leader": _leader_text(leader),
                "hypervolume": progress["hypervolume"],
                "note": stored.note or "",
                "started": _when(search.created_at),
                "finished": _when(search.updated_at) if search.ended else "",
            }
        )
    return pd.DataFrame(rows)


def _leader_text(leader: dict | None) -> str:
    """``#12 accuracy 0.98, model_bytes 8,010``: the front's best on the first objective with
    its other values (one trial's; each objective's own best is usually another trial's); a
    confirmed leader's means say so: ``... (confirmed, mean of 3 seeds)``."""
    if leader is None:
        return ""
    values = ", ".join(f"{k} {v:,.6g}" for k, v in leader["values"].items())
    return f"#{leader['trial_id']} {values}{analysis.confirmed_note(leader)}"
