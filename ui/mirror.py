"""``winnow ui --server HOST:PORT`` without a database: the server's searches and trials, read
through the client SDK, copied into a local SQLite file that the pages then read like any
store. A sync replaces the rows of each running search, and of each ended search once (the
API has no "trials changed since"). Rows travel without
timestamps: each keeps the sync time it was first seen at (and first seen finished at).

The mirror lives in a private folder of the user (``env.private_cache_dir``:
``$XDG_CACHE_HOME/winnow/ui-mirror``, else ``~/.cache/winnow/ui-mirror``, mode 0o700): in the
shared temp folder another user could plant a database at the predictable path, or read the
one written there."""

from __future__ import annotations

import hashlib
import json
import time

from pydantic import ValidationError

from winnow.records import TERMINAL
from winnow.service import env
from winnow.service.api.convert import search_from_dict, trial_from_dict
from winnow.service.client import Client
from winnow.service.engine import readout
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store, sqlite_url


def mirror_url(server: str) -> str:
    name = hashlib.sha256(server.encode()).hexdigest()[:12]
    return sqlite_url(env.private_cache_dir("ui-mirror") / f"mirror-{name}.db")


def sync(client: Client, store: Store) -> None:
    """Copy the searches that changed since the last sync (a finished search is copied once).
    A row keeps the time it was first seen, and when it was first seen finished."""
    now = time.time()
    listed = client.searches()
    store.forget_searches_except({info["id"] for info in listed})
    known = {s.id: (s.status, s.updated_at) for s in store.searches()}
    for info in listed:
        ended = info["status"] in TERMINAL
        if ended and known.get(info["id"]) == (info["status"], info["updated_at"]):
            continue  # a running search's rows change without its update time
        trials = client.search(info["id"]).trials()
        _replace_search(store, info, trials, now)


def _replace_search(store: Store, info: dict, trials: list[dict], now: float) -> None:
    search = search_from_dict(info, *_task_key_and_spec(info["spec"]))
    store.copy_search(search, [trial_from_dict(info["id"], t, now) for t in trials])


def _task_key_and_spec(spec: dict | None) -> tuple[str, str]:
    """The task key and spec JSON of a listed search. A spec that no longer validates (stored by
    an older server) or that the listing left out (too large) is copied as it came: the pages
    read it through ``readout.stored_spec``, as the server does."""
    try:
        parsed = SearchSpec.model_validate(readout.stored_defaults(spec))
    except ValidationError:
        task = spec.get("task") if isinstance(spec, dict) else None
        dataset = task.get("dataset") if isinstance(task, dict) else None
        return str(dataset or ""), json.dumps(spec or {}, sort_keys=True)
    return parsed.task.key, parsed.to_json()
