"""Importance and the trials' DataFrame through a real server: the GetImportance RPC, the
SDK's ``search.importance()`` and ``search.trials_dataframe()``, and ``winnow importance``."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import TINY_SPEC
from winnow.service.api.server import ServerConfig, WinnowServer
from winnow.service.cli import main
from winnow.service.client import Client, Search, WinnowError
from winnow.service.store import sqlite_url

pytestmark = pytest.mark.usefixtures("one_thread")

TRIALS = 8  # a second each; importance over them with min_trials below the default of 10
MIN_TRIALS = 6
SPACE_PARAMS = ("architecture.depth", "architecture.width", "optimizer.lr")  # decision paths


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Iterator[tuple[Client, str]]:
    """One finished tiny digits search of ``TRIALS`` candidates, shared by the tests here."""
    folder = tmp_path_factory.mktemp("importance")
    config = ServerConfig(db_url=sqlite_url(folder / "winnow.db"), address="127.0.0.1:0")
    server = WinnowServer(config).start()
    spec = TINY_SPEC | {"budget": {"max_trials": TRIALS}}
    try:
        with Client(server.address, timeout=60, retries=2) as client:
            search = client.submit(spec)
            assert search.wait(timeout=120)["status"] == "finished"
            yield client, search.id
    finally:
        server.stop(grace=0.5)


def test_each_objectives_importances_sum_to_one(searched):
    client, search_id = searched
    report = client.search(search_id).importance(min_trials=MIN_TRIALS)
    assert report["evaluator"] == "ped-anova" and report["min_trials"] == MIN_TRIALS
    found = {(i["epochs"], i["objective"]): i for i in report["importances"]}
    assert set(found) == {(1, "accuracy"), (1, "params")}
    for item in found.values():
        assert item["trials"] == item["results"] == TRIALS
        assert set(item["params"]) == {*SPACE_PARAMS}  # the tiny space's Optuna params
        assert sum(item["params"].values()) == pytest.approx(1.0)
        values = list(item["params"].values())
        assert values == sorted(values, reverse=True)  # highest first
    # params is a function of depth and width alone: the learning rate cannot explain it
    assert next(iter(found[1, "params"]["params"])) != "optimizer.lr"


def test_fanova_a_fidelity_and_the_default_minimum(searched):
    client, search_id = searched
    search = client.search(search_id)
    fanova = search.importance(fidelity=1, evaluator="fanova", min_trials=MIN_TRIALS)
    assert fanova["evaluator"] == "fanova" and len(fanova["importances"]) == 2
    assert search.importance(fidelity=3, min_trials=MIN_TRIALS)["importances"] == []
    assert search.importance()["importances"] == []  # 8 results: under the default 10


def test_importance_errors_name_what_to_fix(searched):
    client, search_id = searched
    with pytest.raises(WinnowError) as raised:
        client.search(search_id).importance(evaluator="shap")
    assert raised.value.code == "INVALID_ARGUMENT"
    assert "ped-anova" in raised.value.message and "fanova" in raised.value.message
    with pytest.raises(WinnowError) as raised:
        Search(client, "nosuchsearch").importance()
    assert raised.value.code == "NOT_FOUND"


def test_trials_dataframe_has_a_row_per_trial_and_the_stored_metrics(searched):
    client, search_id = searched
    search = client.search(search_id)
    trials = search.trials()
    frame = search.trials_dataframe()
    assert len(frame) == len(trials) == TRIALS
    assert list(frame["row_id"]) == [t["row_id"] for t in trials]
    assert list(frame["number"]) == [t["trial_id"] for t in trials]
    for name in trials[0]["metrics"]:
        assert list(frame[f"metrics_{name}"]) == [t["metrics"].get(name) for t in trials]
    widths = [t["candidate"]["architecture"]["width"] for t in trials]
    assert list(frame["params_architecture.width"]) == widths
    assert not frame["confirmation"].any() and set(frame["stage"]) == {"train"}


def test_cli_importance_json_is_the_reply_and_errors_exit_2(searched, capsys):
    client, search_id = searched
    address = ("--address", client.address)
    args = ["importance", search_id, "--min-trials", str(MIN_TRIALS), *address]
    assert main([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == client.search(search_id).importance(min_trials=MIN_TRIALS)
    warning = "fewer than 50 results (8): a hint, not a ranking"  # the dashboard's caution
    assert [i["warning"] for i in printed["importances"]] == [warning] * 2
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "accuracy at 1 epochs, over 8 trials:" in out
    assert out.count(f"  warning: {warning}") == 2  # under each objective's bars
    assert main([*args, "--evaluator", "shap"]) == 2
    assert "allowed: ped-anova, fanova" in capsys.readouterr().err
    assert main(["importance", "nosuchsearch", *address]) == 2
