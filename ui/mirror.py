"""``winnow ui --server HOST:PORT`` without a database: the server's searches and trials, read
through the client SDK, copied into a local SQLite file that the pages then read like any
store. A sync replaces the rows of each running search, and of each ended search once (the
API has no "trials changed since"). Rows travel without
timestamps: each keeps the sync time it was first seen at (and first seen finished at)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import delete, insert, select

from winnow.service.client import Client
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store, sqlite_url
from winnow.service.store.tables import SearchRow, TrialRow


def mirror_url(server: str) -> str:
    name = hashlib.sha256(server.encode()).hexdigest()[:12]
    return sqlite_url(Path(tempfile.gettempdir()) / "winnow-ui" / f"mirror-{name}.db")


def _trial_values(search_id: str, trial: dict, now: float, times: dict) -> dict:
    created, finished = times.get(trial["row_id"], (now, None))
    done = trial["status"] not in ("queued", "running")
    return {
        "id": trial["row_id"],
        "search_id": search_id,
        "number": trial["trial_id"],
        "stage": trial["stage"],
        "epochs": trial["epochs"],
        "rung": trial["rung"],
        "status": trial["status"],
        "candidate_json": json.dumps(trial["candidate"], sort_keys=True, separators=(",", ":")),
        "candidate_key": trial["structural_hash"] or "",
        "structural_hash": trial["structural_hash"],
        "functional_hash": trial["functional_hash"],
        "metrics_json": json.dumps(trial["metrics"]),
        "error": trial["error"],
        "reused": trial["reused"],
        "seconds": trial["seconds"],
        "device": trial["device"],
        "host": trial["host"],
        "created_at": created,
        "finished_at": (finished or now) if done else None,
    }


def sync(server: str, token: str | None, store: Store) -> None:
    """Copy the searches that changed since the last sync (a finished search is copied once).
    A row keeps the time it was first seen, and when it was first seen finished."""
    now = time.time()
    with Client(server, token=token, timeout=20, retries=1) as client:
        listed = client.searches()
        _forget_others(store, {info["id"] for info in listed})
        known = _known_searches(store)
        for info in listed:
            ended = info["status"] in ("finished", "failed", "cancelled")
            if ended and known.get(info["id"]) == (info["status"], info["updated_at"]):
                continue  # a running search's rows change without its update time
            trials = client.search(info["id"]).trials()
            _replace_search(store, info, trials, now)


def _known_searches(store: Store) -> dict[str, tuple[str, float]]:
    with store.session() as session:
        rows = session.execute(select(SearchRow.id, SearchRow.status, SearchRow.updated_at))
        return {id_: (status, updated) for id_, status, updated in rows}


def _replace_search(store: Store, info: dict, trials: list[dict], now: float) -> None:
    spec = SearchSpec.model_validate(info["spec"])
    row = SearchRow(
        id=info["id"],
        name=info["name"],
        task_key=spec.task.key,
        spec_json=spec.to_json(),
        status=info["status"],
        error=info["error"],
        created_at=info["created_at"],
        updated_at=info["updated_at"],
    )
    of_search = TrialRow.search_id == info["id"]
    with store.batch(), store.writing() as session:
        stamps = select(TrialRow.id, TrialRow.created_at, TrialRow.finished_at).where(of_search)
        times = {id_: (created, finished) for id_, created, finished in session.execute(stamps)}
        session.merge(row)
        session.execute(delete(TrialRow).where(of_search))
        if trials:
            values = [_trial_values(info["id"], t, now, times) for t in trials]
            session.execute(insert(TrialRow), values)


def _forget_others(store: Store, kept: set[str]) -> None:
    """Searches the server no longer lists (or a former server on the same address had)."""
    with store.writing() as session:
        session.execute(delete(TrialRow).where(TrialRow.search_id.not_in(kept)))
        session.execute(delete(SearchRow).where(SearchRow.id.not_in(kept)))
