"""``examples/tabular``: the example of user code (a CSV read by the user's function, the
user's network and training loop) searched through an in-process server and its client, cut
to three trials over rungs of 1 and 2 epochs, so the promoted candidate's second rung resumes
from its checkpoint through the example's own ``fit``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from winnow.search_space.specfile import load_yaml_or_json
from winnow.service.client import Client
from winnow.service.store import Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tabular"


@pytest.fixture
def example(tmp_path, monkeypatch) -> dict:
    """The example's spec, its package on the path and its CSV written under ``tmp_path``."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("TABULAR_EXAMPLE_CSV", str(tmp_path / "customers.csv"))
    spec = load_yaml_or_json(EXAMPLE / "search.yaml")
    spec["budget"] = {"max_trials": 3}
    spec["strategy"] |= {"sampler": "random", "rungs": [1, 2], "reduction_factor": 3}
    return spec


def test_the_tabular_example_searches_through_the_server(make_server, tmp_path, example):
    server = make_server(allowed_modules=("tabular_example",))
    with Client(server.address, retries=0) as client:
        search = client.submit(example)
        info = search.wait(timeout=120)
        assert info["status"] == "finished", info.get("error")
        front = search.front()
        recipe = search.export()
    assert (tmp_path / "customers.csv").is_file()  # the user's function wrote and read it
    trained = [r for r in Store(server.config.db_url).trials(search.id) if r.stage == "train"]
    assert all(r.status == "ok" for r in trained), [r.error for r in trained]
    first, promoted = ([r for r in trained if r.epochs == epochs] for epochs in (1, 2))
    assert len(first) == 3 and len(promoted) == 1
    # the example's fit resumed the first rung's checkpoint: it trained only the new epoch
    assert promoted[0].metrics["epochs_run"] == 1
    # the example reports the accuracy after each epoch: the resumed run's curve is whole
    [top] = promoted
    [below] = [r for r in first if r.number == top.number]
    assert len(top.accuracy_curve) == 2 and top.accuracy_curve[:1] == below.accuracy_curve
    assert top.accuracy_curve[-1] == top.metrics["accuracy"]  # measured the same way
    assert front["points"] and max(p["accuracy"] for p in front["points"]) > 0.45  # chance 1/3
    assert recipe["candidate"]["architecture"]["builder"] == "tabular_example.models:build"
    assert recipe["training"]["task"]["trainer"] == "tabular_example.train:fit"


def test_the_examples_csv_appears_whole_or_not_at_all(tmp_path, monkeypatch, example):
    """A write that fails midway leaves no ``customers.csv`` (another worker's ``load()``
    would read it truncated) and no temporary file; a whole write reads back."""
    from tabular_example import data

    real_savetxt = np.savetxt

    def failing_savetxt(file, *args, **kwargs):
        real_savetxt(file, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(np, "savetxt", failing_savetxt)
    with pytest.raises(OSError, match="disk full"):
        data.load()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(np, "savetxt", real_savetxt)
    assert len(data.load()["train_y"]) > 0 and [p.name for p in tmp_path.iterdir()] == [
        "customers.csv"
    ]
