"""``winnow bench ui``: how fast the dashboard's Search page opens on a big search.

A realistic search is seeded into a fresh SQLite store (``winnow.bench.seed.seed_search``) and
the Search page opened with Streamlit's ``AppTest``, which runs the page's script as the server
would, without a browser: cold (empty caches), warm, and the trial table's next page; then the
Compare page of that search and a second one as big, cold."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from winnow.bench.seed import seed_search
from winnow.service.store import Store, sqlite_url


def _timed(run: Any) -> float:
    start = time.perf_counter()
    run()
    return round(time.perf_counter() - start, 3)


def bench_ui(url: str, search_id: str, app: Path, other: str | None = None) -> dict[str, Any]:
    """Seconds to run the Search page's script (``app``, the dashboard) cold (a fresh
    process: every query and figure), warm (cached reads: a live refresh with nothing new), and
    to show the next table page; with ``other``, a second search, the Compare page of the two
    with empty caches (``compare_seconds``)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["WINNOW_UI_DB"], os.environ["WINNOW_UI_SERVER"] = url, ""
    Store(url).close()  # migrations run once here, not inside the timed page
    page = AppTest.from_file(str(app), default_timeout=120)
    page.query_params["search"] = search_id
    cold = _timed(page.run)
    if page.exception:
        raise RuntimeError(f"the Search page failed: {page.exception[0].message}")
    warm = _timed(page.run)
    next_page = _timed(page.button(key="t-next").click().run)
    result = {
        "search_page_seconds": cold,
        "search_page_warm_seconds": warm,
        "table_next_page_seconds": next_page,
    }
    if other is not None:
        st.cache_data.clear()  # cold: the Search page's reads of the first search dropped
        compare = AppTest.from_file(str(app), default_timeout=120)
        compare.query_params["compare"] = f"{search_id},{other}"
        result["compare_seconds"] = _timed(compare.run)
        if compare.exception:
            raise RuntimeError(f"the Compare page failed: {compare.exception[0].message}")
    return result


def run_bench_ui(trials: int, seed: int, db: str | None, app: Path) -> dict[str, Any]:
    """Seed two searches of ``trials`` proposals each (into ``db``, else a temporary SQLite
    file) and time the Search page of the first and the Compare page of both (``rows``,
    ``seed_seconds``: the first's; ``compare_rows``: both searches' rows)."""
    with tempfile.TemporaryDirectory() as folder:
        url = db or sqlite_url(Path(folder) / "bench-ui.db")
        store = Store(url)
        seconds = time.perf_counter()
        search_id = seed_search(store, trials, seed=seed)
        seeded = round(time.perf_counter() - seconds, 3)
        other = seed_search(store, trials, seed=seed + 1, changes={"name": "seeded-digits-b"})
        rows, other_rows = len(store.trials(search_id)), len(store.trials(other))
        store.close()
        result = {"trials": trials, "rows": rows, "seed_seconds": seeded}
        result["compare_rows"] = rows + other_rows
        return result | bench_ui(url, search_id, app, other)
