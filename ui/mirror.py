"""``winnow ui --server HOST:PORT`` without a database: the server's searches and trials, read
through the client SDK, copied into a local SQLite file that the pages then read like any
store. Each sync replaces a search's rows (the API pages through them; it has no "changed
since"). Rows travel without timestamps, so their times here are the sync's."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import delete, insert

from winnow.service.client import Client
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store, sqlite_url
from winnow.service.tables import SearchRow, TrialRow


def mirror_url(server: str) -> str:
    name = hashlib.sha256(server.encode()).hexdigest()[:12]
    return sqlite_url(Path(tempfile.gettempdir()) / "winnow-ui" / f"mirror-{name}.db")


def _trial_values(search_id: str, trial: dict, now: float) -> dict:
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
        "created_at": now,
        "finished_at": None if trial["status"] in ("queued", "running") else now,
    }


def sync(server: str, token: str | None, store: Store) -> None:
    now = time.time()
    with Client(server, token=token, timeout=20, retries=1) as client:
        listed = client.searches()
        _forget_others(store, {info["id"] for info in listed})
        for info in listed:
            trials = client.search(info["id"]).trials()
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
            with store.batch(), store.writing() as session:
                session.merge(row)
                session.execute(delete(TrialRow).where(TrialRow.search_id == info["id"]))
                if trials:
                    values = [_trial_values(info["id"], t, now) for t in trials]
                    session.execute(insert(TrialRow), values)


def _forget_others(store: Store, kept: set[str]) -> None:
    """Searches the server no longer lists (or a former server on the same address had)."""
    with store.writing() as session:
        session.execute(delete(TrialRow).where(TrialRow.search_id.not_in(kept)))
        session.execute(delete(SearchRow).where(SearchRow.id.not_in(kept)))
