"""Where the dashboard reads, and its cached reads.

``winnow ui`` passes its options in the environment (``WINNOW_UI_DB``, ``WINNOW_UI_SERVER``,
``WINNOW_UI_SERVER_TOKEN``, ``WINNOW_UI_TLS_CA``; the dashboard's own token, ``WINNOW_UI_TOKEN``,
is ``signin``'s), which Streamlit's ``AppTest`` can set too. With a
database URL the pages read that store; with only a server, ``mirror`` copies the server's
searches into a local SQLite file and the pages read that. A server address is also what
cancelling needs: searches run in the server's process, which only it can stop.

Every read goes through the store's records and its read API (``winnow.service.store.reads``),
cached with ``st.cache_data``, keyed by the search's ``reads.version`` (so a live search is
re-read as soon as a row changes, and a finished one never), with a short TTL for what has no
version; importance and the parameter plots are keyed by the size of what they read instead
(``results_at``), so a live search's refresh does not recompute them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from winnow.service.engine import readout
from winnow.service.engine.pareto import front_mask, search_hypervolume
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store, reads
from winnow.ui import analysis, comparison

if TYPE_CHECKING:  # imported when importance is asked for: optuna.importance loads sklearn
    from winnow.service.engine.importance import Importance

REFRESH_SECONDS = 3.0  # how often a running search's page re-reads the store
CACHE_SECONDS = 600  # versioned entries: the key changes when the data does
TIMELINE_RUNS = 2000  # the latest runs a timeline draws: bars enough to read, a light figure


@dataclass(frozen=True)
class Settings:
    db: str | None
    server: str | None
    token: str | None
    tls_ca: str | None = None  # the CA certificate (PEM) of a TLS server

    @classmethod
    def from_env(cls) -> Settings:
        def env(name: str) -> str | None:
            return os.environ.get(name) or None

        names = ("WINNOW_UI_DB", "WINNOW_UI_SERVER", "WINNOW_UI_SERVER_TOKEN", "WINNOW_UI_TLS_CA")
        return cls(*(env(name) for name in names))

    def client(self, timeout: float):
        """A client of the server (gRPC is imported only when the dashboard needs one)."""
        from winnow.service.client import Client

        return Client(self.server, token=self.token, tls_ca=self.tls_ca, timeout=timeout, retries=1)


@st.cache_resource(show_spinner=False)
def _store(url: str) -> Store:
    return Store(url)


def store() -> Store:
    """The store the pages read: the database given, or the local mirror of the server."""
    settings = Settings.from_env()
    if settings.db:
        return _store(settings.db)
    if settings.server:
        from winnow.ui.mirror import mirror_url

        url = mirror_url(settings.server)
        return _store(_synced(settings.server, settings.token, settings.tls_ca, url))
    raise RuntimeError("set WINNOW_UI_DB (a database URL) or WINNOW_UI_SERVER (host:port)")


@st.cache_data(ttl=REFRESH_SECONDS, show_spinner=False)
def _synced(server: str, token: str | None, tls_ca: str | None, url: str) -> str:
    from winnow.ui.mirror import sync

    with Settings(None, server, token, tls_ca).client(timeout=20) as client:
        sync(client, _store(url))
    return url


NO_CURVES_THROUGH_SERVER = (
    "This server sent no per-epoch curves: a winnow server from before its API carried them "
    "sends none. Open the dashboard on its database (`winnow ui --db URL`) to see them."
)


def through_server() -> bool:
    """Whether the pages read a mirror of a server (``mirror``): its rows hold the curves the
    API's ``Trial`` carried, none from an older server."""
    settings = Settings.from_env()
    return not settings.db and bool(settings.server)


def version(search_id: str) -> tuple:
    return reads.version(store(), search_id)


@st.cache_data(ttl=REFRESH_SECONDS, show_spinner=False)
def searches_overview(url: str) -> pd.DataFrame:
    """Every search with its progress, best values and hypervolume (newest first)."""
    from winnow.ui.overview import overview

    return overview(_store(url))


def spec(spec_json: str) -> SearchSpec:
    """The search's spec, or the stand-in of one that no longer validates
    (``readout.stored_spec``; ``spec_note`` says why)."""
    return _spec(spec_json).spec


def spec_note(spec_json: str) -> str | None:
    return _spec(spec_json).note


@st.cache_data(max_entries=64, show_spinner=False)
def _spec(spec_json: str) -> readout.StoredSpec:
    return readout.stored_spec(spec_json)


@st.cache_data(ttl=CACHE_SECONDS, max_entries=16, show_spinner=False)
def search_data(url: str, search_id: str, version: tuple) -> dict[str, Any]:
    """Everything the Search page draws except the table: counts, funnel, trained results
    with the front marked, the confirmed front (``analysis.confirmed_front``; empty without
    confirmation), history, proxy scores, the evidence ladder, filter values."""
    db = _store(url)
    search = db.search(search_id)
    the_spec = _spec(search.spec_json).spec
    raw = _trained(url, search_id, version)
    trained, history, front_epochs = _results(raw, the_spec)
    screening = reads.screening_scores(db, search_id)
    front = trained[trained["front_rung"]]
    names = [o.name for o in the_spec.objectives]
    points, ids = front[names].to_numpy(float).tolist(), front["number"].tolist()
    counts = reads.counts(db, search_id)
    proposals = reads.proposals(db, search_id).get(search_id, 0)
    pairs = zip(counts["stage"], counts["epochs"], strict=True)
    runs = reads.confirmation_runs(db, search_id)  # strategy.confirm's rows
    figures = analysis.front_figures(the_spec, raw, runs, ids, points)  # None: not confirmed
    return {
        "search": search,
        "progress": analysis.progress(
            counts,
            proposals,
            search_hypervolume(the_spec.objectives, points),
            readout.rung_starts(the_spec.strategy),
        ),
        "leader": analysis.leader(the_spec, raw, runs, ids, points, figures),  # by means
        "confirmed_front": analysis.confirmed_front(the_spec.objectives, ids, points, figures),
        "funnel": analysis.funnel(counts, the_spec.strategy.rungs, proposals),
        "trained": trained,
        "front_epochs": front_epochs,
        "history": history,
        "proxies": analysis.proxy_table(screening),
        "evidence_ladder": _ladder(the_spec, raw, screening),
        "axis_values": reads.axis_values(db, search_id),
        "fidelities": sorted({analysis.fidelity_label(stage, epochs) for stage, epochs in pairs}),
        "statuses": sorted(set(counts["status"])),
    }


def _results(
    trained: pd.DataFrame, the_spec: SearchSpec
) -> tuple[pd.DataFrame, pd.DataFrame, int | None]:
    """Trained results (``reads.trained``) at every rung with ``on_front`` (the front of the
    completed ones, else of the highest rung reached), the history of the completed ones, and
    the front's epochs."""
    names = [o.name for o in the_spec.objectives]
    trained = analysis.expand(trained if names else trained.iloc[0:0], names)  # a stand-in: none
    rungs = the_spec.strategy.rungs
    done = reads.completed(trained, len(rungs) - 1).reset_index(drop=True)
    rung, front = analysis.front_rows(trained, len(rungs))
    trained["on_front"] = False
    trained["front_rung"] = trained["id"].isin(front["id"])  # the rung the front is made of
    if not front.empty:
        flags = front_mask(front[names].to_numpy(float), the_spec.directions)
        trained.loc[trained["id"].isin(front.loc[flags, "id"]), "on_front"] = True
    front_epochs = None if rung is None else rungs[rung]
    return trained, analysis.history(done, the_spec.objectives), front_epochs


def _ladder(the_spec: SearchSpec, trained: pd.DataFrame, screening: pd.DataFrame) -> list:
    """The evidence ladder (``readout.evidence_ladder``) from the page's reads: the completed
    results (of ``reads.trained``) and the screening rows of the trained candidates."""
    if not the_spec.objectives:  # a stand-in spec: no results to rank against
        return []
    done = reads.completed(trained, len(the_spec.strategy.rungs) - 1)
    completed = zip(done["number"], done["metrics"], strict=True)
    columns = (screening[c] for c in ("number", "stage", "metrics"))
    return readout.evidence_ladder(the_spec, completed, zip(*columns, strict=True))


@st.cache_data(ttl=CACHE_SECONDS, max_entries=16, show_spinner=False)
def _trained(url: str, search_id: str, version: tuple) -> pd.DataFrame:
    """``reads.trained``, read once per version for the page's every section."""
    return reads.trained(_store(url), search_id)


def trained_candidates(url: str, search_id: str, version: tuple) -> pd.DataFrame:
    """The trained results' candidate numbers, epochs, candidate JSON and metrics, in
    completion order (``reads.trained``): what importance and the parameter plots read."""
    return _trained(url, search_id, version)[["number", "epochs", "candidate", "metrics"]]


def results_at(url: str, search_id: str, version: tuple, epochs: int) -> int:
    """A cache key for what is trained at ``epochs``: its count in steps of about 5 %
    (``analysis.size_bucket``), so a live search's importance and parameter plots are redrawn
    as the results grow, not at every refresh."""
    trained = trained_candidates(url, search_id, version)
    return analysis.size_bucket(int((trained["epochs"] == epochs).sum()))


@st.cache_data(ttl=CACHE_SECONDS, max_entries=64, show_spinner="Computing importance…")
def importance_of(
    url: str,
    search_id: str,
    _version: tuple,
    size: int,
    epochs: int,
    objective: str,
    evaluator: str,
) -> Importance | None:
    """Each parameter's importance for ``objective`` at ``epochs`` (``importance``: Optuna's
    evaluator over a study rebuilt from a sample of the trained results), or None with too
    few; cached by ``size`` (:func:`results_at`), not by the version read."""
    from winnow.service.engine import importance  # optuna.importance and sklearn: 0.5 s

    the_spec = _spec(_store(url).search(search_id).spec_json).spec
    [wanted] = [o for o in the_spec.objectives if o.name == objective]
    trained = trained_candidates(url, search_id, _version)
    at = trained[trained["epochs"] == epochs]
    pairs = [(c, m.get(objective)) for c, m in zip(at["candidate"], at["metrics"], strict=True)]
    return importance.fidelity_importance(the_spec.search_space, epochs, wanted, pairs, evaluator)


@st.cache_data(ttl=CACHE_SECONDS, max_entries=16, show_spinner=False)
def parameters_at(
    url: str, search_id: str, _version: tuple, size: int, epochs: int
) -> pd.DataFrame:
    """The trained results at ``epochs`` with their objectives and varying decisions as
    columns (``analysis.parameter_table``); cached by ``size`` (:func:`results_at`)."""
    the_spec = _spec(_store(url).search(search_id).spec_json).spec
    trained = trained_candidates(url, search_id, _version)
    at = trained[trained["epochs"] == epochs]
    space = the_spec.search_space
    decided = [readout.decisions(space, c) for c in at["candidate"]]
    names = [o.name for o in the_spec.objectives]
    return analysis.parameter_table(at["number"], at["metrics"], decided, names)


@st.cache_data(ttl=CACHE_SECONDS, max_entries=16, show_spinner=False)
def curves(url: str, version: tuple, row_ids: tuple[int, ...]) -> pd.DataFrame:
    """The per-epoch loss and accuracy of the rows ``row_ids`` (``reads.curves``)."""
    return reads.curves(_store(url), row_ids)


@st.cache_data(ttl=CACHE_SECONDS, max_entries=16, show_spinner=False)
def timeline(url: str, search_id: str, version: tuple) -> pd.DataFrame:
    """The latest ``TIMELINE_RUNS`` runs in worker lanes (``analysis.worker_lanes``)."""
    return analysis.worker_lanes(reads.runs(_store(url), search_id, TIMELINE_RUNS))


@st.cache_data(ttl=CACHE_SECONDS, max_entries=16, show_spinner=False)
def comparison_data(url: str, search_ids: tuple[str, ...], versions: tuple) -> dict[str, Any]:
    """The Compare page's searches (``comparison.Compared``, in the order given), the
    objectives they share with the shared reference point fixed, each one's hypervolume
    history against it, and the confirmed fronts (``confirmed``: search id -> its
    ``analysis.confirmed_front`` frame, for the searches that have one: :func:`_confirmed_front`);
    ``versions``: each search's :func:`version` (the cache's key)."""
    db = _store(url)
    searches = [db.search(i) for i in search_ids]
    specs = [_spec(s.spec_json).spec for s in searches]
    shared = comparison.shared_objectives(specs)
    trained, counts = reads.trained(db, search_ids), reads.counts(db, search_ids)
    proposals = reads.proposals(db, search_ids)
    parts = [
        comparison.compared(
            search,
            the_spec,
            trained[trained["search_id"] == search.id],
            counts[counts["search_id"] == search.id].drop(columns="search_id"),
            proposals.get(search.id, 0),
            shared,
        )
        for search, the_spec in zip(searches, specs, strict=True)
    ]
    points = [p for part in parts for p in part.points]
    fixed = comparison.shared_reference(shared, specs, points)
    runs = reads.confirmation_runs(db, search_ids)  # at most top_k x seeds rows a search
    return {
        "parts": parts,
        "confirmed": {
            p.search.id: frame
            for p in parts
            if not (frame := _confirmed_front(p, trained, runs)).empty
        },
        "shared": fixed,
        "same": comparison.same_objectives(specs),
        "history": comparison.hypervolume_histories(parts, fixed) if fixed else pd.DataFrame(),
    }


def _confirmed_front(part: comparison.Compared, trained: pd.DataFrame, runs: list) -> pd.DataFrame:
    """The search's "Confirmed front" as its Search page shows it (``analysis.confirmed_front``
    of its front's ``analysis.front_figures``); empty when no point of its front has confirmed
    figures (no confirmation rows, rows of failed runs only, or runs of recipes no longer on
    the front)."""
    mine = [r for r in runs if r.search_id == part.search.id]
    if not mine:
        return pd.DataFrame()
    names = [o.name for o in part.spec.objectives]
    ids, points = part.front["number"].tolist(), part.front[names].to_numpy(float).tolist()
    raw = trained[trained["search_id"] == part.search.id]
    figures = analysis.front_figures(part.spec, raw, mine, ids, points)
    return analysis.confirmed_front(part.spec.objectives, ids, points, figures)


@st.cache_data(ttl=CACHE_SECONDS, max_entries=256, show_spinner=False)
def trial_page(url: str, search_id: str, version: tuple, query: reads.TableQuery):
    return reads.trial_page(_store(url), search_id, query)


def cancel(search_id: str) -> str:
    """Ask the server to cancel; returns the search's status as the server reports it."""
    settings = Settings.from_env()
    if not settings.server:
        raise RuntimeError("cancelling needs the server's address (winnow ui --server HOST:PORT)")
    with settings.client(timeout=10) as client:
        return client.search(search_id).cancel()["status"]
