"""Kept weights: a search keeps its best completed trials' trained weights beside the database
(``engine.weights``, ``store.artifacts``), deletes the others' as better ones complete, never
records a file a crash left half-written, and ``winnow export --format weights`` hands them out
as a ``state_dict`` that loads into winnow's own network with ``strict=True``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import torch

from winnow.records import Status, TrialRecord
from winnow.search_space import training
from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import load_dataset
from winnow.service.cli import main
from winnow.service.client import Client, WinnowError
from winnow.service.engine import Engine
from winnow.service.engine.weights import KeptWeights, best_numbers
from winnow.service.search_spec import parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.service.store.artifacts import default_root
from winnow.workers.executor import InProcessExecutor


def kept(rows: list[TrialRecord]) -> dict[int, str]:
    return {r.number: r.weights_path for r in rows if r.weights_path is not None}


def stored_weights(folder: Path) -> set[Path]:
    return set(folder.rglob("*.pt"))


def test_a_search_keeps_its_best_weights_and_winnow_export_gives_a_loadable_state_dict(
    make_server, tiny_spec, tmp_path
):
    server = make_server()
    spec = tiny_spec(budget={"max_trials": 5}, keep_weights=2)
    with Client(server.address, timeout=20, retries=2) as client:
        search = client.submit(spec)
        search.wait()
        rows = server.store.trials(search.id)
        completed = {r.number: r for r in rows if r.completed(0)}
        assert len(completed) == 5  # every one-epoch MLP trains on the digits
        points = {n: [r.metrics["accuracy"], r.metrics["params"]] for n, r in completed.items()}
        best = best_numbers(points, ["maximize", "minimize"], 2)
        # the best two keep theirs, in the folder beside the database; the others were deleted
        assert set(kept(rows)) == set(best)
        folder = default_root(server.store.url)
        assert stored_weights(folder) == {Path(p) for p in kept(rows).values()}
        # the SDK (ListTrials) says which trials' weights can be exported
        listed = {t["trial_id"] for t in search.trials() if t["weights_kept"]}
        assert listed == set(best)

        number = best[0]
        out = tmp_path / "bundle"
        args = [search.id, "--trial", str(number), "--format", "weights", "--out", str(out)]
        assert main(["export", *args, "--address", server.address]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["recipe.json", "weights.pt"]
        recipe = json.loads((out / "recipe.json").read_text())
        assert "artifacts" not in recipe  # the server's paths stay on the server

        digits = load_dataset("digits")
        model = Candidate(**recipe["candidate"]).build_model(digits.num_classes, digits.input_shape)
        state = torch.load(out / "weights.pt", weights_only=True)
        model.load_state_dict(state, strict=True)
        # evaluated as winnow evaluates, it scores exactly what the search stored
        accuracy = training.test_accuracy(model, digits, torch.device("cpu"))
        assert accuracy == recipe["metrics"]["accuracy"]
        assert recipe["metrics"]["accuracy"] == completed[number].metrics["accuracy"]

        dropped = min(set(completed) - set(best))
        with pytest.raises(WinnowError) as raised:
            search.export(trial_id=dropped, format="weights", path=tmp_path / "none")
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION.name
        assert f"trial {dropped}'s weights were not kept: only the top 2" in raised.value.message
        assert not (tmp_path / "none").exists()

        # the pytorch bundle carries the kept weights, and only those
        search.export(trial_id=number, format="pytorch", path=tmp_path / "kept")
        assert (tmp_path / "kept" / "weights.pt").read_bytes() == (out / "weights.pt").read_bytes()
        search.export(trial_id=dropped, format="pytorch", path=tmp_path / "untrained")
        assert not (tmp_path / "untrained" / "weights.pt").exists()


def test_a_search_with_keep_weights_0_keeps_none_and_says_so(make_server, tiny_spec):
    server = make_server()
    with Client(server.address, timeout=20, retries=2) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 1}, keep_weights=0))
        search.wait()
        assert kept(server.store.trials(search.id)) == {}
        with pytest.raises(WinnowError, match=r"keep_weights: 0"):
            search.export(format="weights")


def test_best_numbers_rank_the_front_first_then_the_first_objective():
    # (accuracy, params): 1 and 3 are on the front, 2 is dominated by 1 only, 4 by all
    points = {1: [0.9, 200.0], 2: [0.85, 300.0], 3: [0.7, 100.0], 4: [0.6, 400.0]}
    directions = ["maximize", "minimize"]
    assert best_numbers(points, directions, 3) == [1, 3, 2]
    assert best_numbers(points, directions, 1) == [1]
    assert best_numbers(points, directions, 0) == []
    assert best_numbers({5: [0.5], 6: [0.8], 7: [0.8]}, ["maximize"], 2) == [6, 7]


def tiny_engine_spec(keep_weights: int, trials: int):
    return parse_search_spec(
        {
            "space": {
                "architecture": {"family": "mlp", "depth": 1, "width": [8, 16, 32]},
                "optimizer": {"name": "adamw", "lr": 0.01},
            },
            "task": {"dataset": "digits"},
            "objectives": [{"name": "accuracy"}],
            "budget": {"max_trials": trials},
            "strategy": {"name": "random", "rungs": [1]},
            "keep_weights": keep_weights,
        }
    )


def test_retention_deletes_the_files_and_clears_the_rows_of_trials_that_fell_out(tmp_path):
    store = Store(sqlite_url(tmp_path / "w.db"))
    engine = Engine.create(tiny_engine_spec(keep_weights=1, trials=3), store, InProcessExecutor())
    engine.run()
    rows = store.trials(engine.search_id)
    accuracies = {r.number: r.metrics["accuracy"] for r in rows if r.completed(0)}
    assert len(accuracies) == 3
    best = best_numbers({n: [a] for n, a in accuracies.items()}, ["maximize"], 1)
    assert set(kept(rows)) == set(best)
    folder = store.artifacts.root / engine.search_id
    assert stored_weights(folder) == {Path(kept(rows)[best[0]])}
    weights = KeptWeights(engine.spec, store, engine.search_id, rows)
    assert set(weights.kept) == set(best)  # a resumed search knows what it keeps


def test_a_resumed_search_deletes_the_files_no_trial_names(tmp_path):
    store = Store(sqlite_url(tmp_path / "w.db"))
    engine = Engine.create(tiny_engine_spec(keep_weights=1, trials=2), store, InProcessExecutor())
    engine.run()
    folder = store.artifacts.root / engine.search_id
    (named,) = kept(store.trials(engine.search_id)).values()
    # what kills leave: a file written before its row was, and one cut short mid-write
    strays = [folder / "999.pt", folder / "998.pt.tmp"]
    for stray in strays:
        stray.write_bytes(b"left by a kill")
    other = store.artifacts.root / "another-search" / "1.pt"
    other.parent.mkdir()
    other.write_bytes(b"another search's")

    Engine.resume(store, engine.search_id, InProcessExecutor())

    assert set(folder.iterdir()) == {Path(named)}
    assert other.is_file()  # only the resumed search's folder is swept


def test_a_crash_while_writing_weights_leaves_no_artifact_recorded(tmp_path, monkeypatch):
    from winnow.service.store import artifacts

    store = Store(sqlite_url(tmp_path / "w.db"))
    spec = tiny_engine_spec(keep_weights=5, trials=1)

    def killed(source, target):  # the process dies after writing the bytes, before the rename
        raise SystemExit("killed")

    monkeypatch.setattr(artifacts, "os", SimpleNamespace(fsync=os.fsync, replace=killed))
    engine = Engine.create(spec, store, InProcessExecutor())
    with pytest.raises(SystemExit):
        engine.run()
    rows = store.trials(engine.search_id)
    assert [r.status for r in rows if r.stage == "train"] == [Status.RUNNING]
    assert kept(rows) == {}
    folder = store.artifacts.root / engine.search_id
    assert stored_weights(folder) == set() and len(list(folder.glob("*.tmp"))) == 1

    monkeypatch.undo()  # restarted: the trial is trained again and its weights kept
    Engine.resume(store, engine.search_id, InProcessExecutor()).run()
    rows = store.trials(engine.search_id)
    assert len(kept(rows)) == 1 and Path(next(iter(kept(rows).values()))).is_file()
    assert list(folder.glob("*.tmp")) == []


def test_a_postgresql_store_keeps_no_weights_unless_given_a_folder(tmp_path):
    assert default_root("postgresql+psycopg://u@h/db") is None
    assert default_root("sqlite://") is None
    assert default_root(sqlite_url(tmp_path / "x.db")) == tmp_path / "x.db.artifacts"


def test_a_crash_after_dropping_weights_leaves_no_row_naming_a_deleted_file(tmp_path, monkeypatch):
    store = Store(sqlite_url(tmp_path / "w.db"))
    retain, committed = KeptWeights.retain, set()  # trials kept by earlier (committed) steps

    def crash_once_dropped(self, completed):  # the process dies before the step commits
        retain(self, completed)
        if committed - set(self.kept):  # an earlier step's weights were dropped in this one
            raise SystemExit("killed")
        committed.update(self.kept)

    monkeypatch.setattr(KeptWeights, "retain", crash_once_dropped)
    engine = Engine.create(tiny_engine_spec(keep_weights=1, trials=3), store, InProcessExecutor())
    with pytest.raises(SystemExit):
        engine.run()
    named = kept(store.trials(engine.search_id))
    assert named and all(Path(path).is_file() for path in named.values())


def test_winnow_serve_artifacts_puts_the_weights_in_the_given_folder(
    make_server, tiny_spec, tmp_path
):
    from winnow.service.cli.main import build_parser

    args = build_parser().parse_args(["serve", "--artifacts", str(tmp_path / "kept")])
    assert args.artifacts == tmp_path / "kept"
    server = make_server(artifacts=tmp_path / "kept")
    with Client(server.address, timeout=20, retries=2) as client:
        search = client.submit(tiny_spec(budget={"max_trials": 1}))
        search.wait()
    (path,) = kept(server.store.trials(search.id)).values()
    assert Path(path).parent == tmp_path / "kept" / search.id and Path(path).is_file()
    assert not default_root(server.store.url).exists()  # not beside the database
