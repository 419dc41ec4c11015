"""``winnow bench search --supernet``: the cascade with the supernet stage on the NB201 oracle,
its supernet trained once (for a second here) and reused by the next seed, its scores computed
for real and cached by functional hash; the entry has the cascade's keys and ``supernet``'s."""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import func, select

from winnow.search_space.params import RandomChooser
from winnow.search_space.specfile import SpecError
from winnow.service.cli import main
from winnow.service.search_spec import Supernet, parse_search_spec
from winnow.service.store import Store, sqlite_url
from winnow.service.store.tables import SupernetRow

# a supernet trained for about a second, each candidate scored on 64 held-out images
TINY = {"minutes": 0.02, "validation_samples": 64, "bn_batches": 1, "warmup": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def _with_a_shared_warm_start(monkeypatch):
    """Every seed's search starts from the same candidate, so the second seed's first supernet
    score can come only from the first seed's cache."""
    from winnow.bench import search

    plain = search.bench_spec

    def bench_spec(*args, **kwargs):
        spec = plain(*args, **kwargs)
        first = spec.search_space.suggest(RandomChooser(random.Random(0)))
        return spec.model_copy(update={"warm_start": [json.loads(first.canonical_json())]})

    monkeypatch.setattr(search, "bench_spec", bench_spec)


def _bench(shared_data, db, artifacts):
    from winnow.bench.search import bench_supernet, run_search_bench

    return run_search_bench(
        str(shared_data / "nb201_cifar10.csv"),
        f"npz:{shared_data / 'cifar10_subset.npz'}",
        ["cascade", "cascade+supernet"],
        budget=3,
        seeds=2,
        objectives=("accuracy", "params"),
        store_url=sqlite_url(db),
        supernet=bench_supernet(cells_per_stage=1, **TINY),
        artifacts=artifacts,
    )


@pytest.mark.slow
def test_the_supernet_trains_once_is_reused_by_the_next_seed_and_its_scores_are_cached(
    shared_data, tmp_path, monkeypatch
):
    db, artifacts = tmp_path / "b.db", tmp_path / "kept"
    _with_a_shared_warm_start(monkeypatch)
    first = _bench(shared_data, db, artifacts)
    cascade, with_supernet = (first["strategies"][s] for s in ("cascade", "cascade+supernet"))
    assert "supernet" not in cascade
    assert set(with_supernet) - {"supernet"} == set(cascade)  # the cascade's keys, and one more
    assert set(cascade["hypervolume_at"]) == {"3"}
    supernet = with_supernet["supernet"]
    assert supernet["trained"] == 1 and supernet["reused"] == 1 and supernet["failed"] == 0
    assert supernet["steps"] > 0 and supernet["train_seconds"] > 0 and supernet["epochs"] > 0
    assert supernet["score_seconds"] > 0  # the scorings', apart from the training's
    assert supernet["cells_per_stage"] == 1
    store = Store(sqlite_url(db), artifacts=artifacts)
    rows = [
        r
        for s in store.searches()
        if s.name.startswith("bench-cascade+supernet")
        for r in store.trials(s.id)
        if r.stage == "supernet"
    ]
    assert len(rows) == supernet["scored"] > 0
    # one scoring per function across both seeds: the shared warm start is scored once
    distinct = {r.functional_hash for r in rows}
    assert supernet["computed"] == len(distinct) < supernet["scored"]
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(SupernetRow)) == 1
    assert len(list((artifacts / "supernets").glob("*.pt"))) == 1
    store.close()
    # the same run again: the stored supernet and every score are reused, nothing recomputed
    again = _bench(shared_data, db, artifacts)["strategies"]["cascade+supernet"]["supernet"]
    assert again["trained"] == 0 and again["reused"] == 2 and again["computed"] == 0
    assert again["score_seconds"] == 0
    assert again["scored"] == supernet["scored"] and again["steps"] == supernet["steps"]


def test_cells_per_stage_is_refused_for_a_family_whose_supernet_has_none():
    spec = {
        "space": {"architecture": {"family": "mlp", "width": [16, 32]}},
        "task": {"dataset": "digits"},
        "strategy": {"supernet": {"cells_per_stage": 1}},
    }
    with pytest.raises(SpecError, match=r"strategy\.supernet\.cells_per_stage.*nb201"):
        parse_search_spec(spec)
    assert Supernet(cells_per_stage=1).cells_per_stage == 1


@pytest.mark.slow
def test_bench_search_supernet_flag_adds_the_strategy(capsys, shared_data, tmp_path):
    argv = [
        "bench", "search",
        "--oracle", f"nb201:{shared_data / 'nb201_cifar10.csv'}",
        "--data", f"npz:{shared_data / 'cifar10_subset.npz'}",
        "--strategies", "random", "--budget", "2", "--seeds", "1", "--supernet",
        "--supernet-minutes", "0.01", "--screen-proxies", "params",
        "--store", f"sqlite:///{tmp_path / 'c.db'}", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["strategies"]) == {"random", "cascade+supernet"}
    assert result["strategies"]["cascade+supernet"]["supernet"]["trained"] == 1


def test_cells_per_stage_enters_the_supernet_key_only_when_set():
    from winnow.bench.search import bench_spec, bench_supernet
    from winnow.service.engine.supernet import supernet_key, training_settings
    from winnow.service.search_spec import Screen

    def spec(depth):
        supernet = bench_supernet(cells_per_stage=depth)
        return bench_spec("cascade+supernet", 0, "digits", 3, ["accuracy"], Screen(), supernet)

    assert "cells_per_stage" not in training_settings(spec(None))  # earlier supernets' keys
    assert training_settings(spec(1))["cells_per_stage"] == 1
    assert len({supernet_key(spec(d)) for d in (None, 1, 2)}) == 3
    own = spec(None).search_space.architecture.cells_per_stage
    # the space's own depth is no resize: the same supernet, under the same key
    assert "cells_per_stage" not in training_settings(spec(own))
    assert supernet_key(spec(own)) == supernet_key(spec(None))


# computed by the code at ee3becc, before cells_per_stage existed: a stored supernet's key
# must not change with the code, or every stored supernet is trained again
GOLDEN_KEYS = [
    ({"epochs": 3, "keep_fraction": 0.5}, "2746e38e2e096448df4881dd"),
    ({"epochs": 3, "keep_fraction": 0.5, "minutes": 2}, "cb698d7105bd051d0b34305d"),
]


@pytest.mark.parametrize(("supernet", "key"), GOLDEN_KEYS)
def test_the_supernet_key_of_a_spec_without_cells_per_stage_is_what_it_was(supernet, key):
    from winnow.service.engine.supernet import supernet_key

    data = {"space": "nb201", "task": {"dataset": "digits"}, "strategy": {"supernet": supernet}}
    assert supernet_key(parse_search_spec(data | {"seed": 0})) == key


@pytest.mark.parametrize("flag", [["--supernet-minutes", "1"], ["--supernet-cells-per-stage", "1"]])
def test_a_supernet_flag_without_the_supernet_strategy_is_refused(capsys, shared_data, flag):
    argv = [
        "bench", "search",
        "--oracle", f"nb201:{shared_data / 'nb201_cifar10.csv'}",
        "--data", f"npz:{shared_data / 'cifar10_subset.npz'}",
        "--strategies", "random,cascade", "--budget", "2", "--seeds", "1", *flag,
    ]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert flag[0] in error and "cascade+supernet" in error and "--supernet" in error
