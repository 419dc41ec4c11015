"""Warm starts: ``winnow submit SPEC --warm-start recipe.json`` (and the spec's ``warm_start``
field) enqueue the recipe's candidate as the search's first Optuna trial; a candidate outside
the space is refused at submission, naming the field that differs."""

from __future__ import annotations

import json

import grpc
import pytest

from winnow.search_space.specfile import SpecError
from winnow.service.cli import main
from winnow.service.client import WinnowError
from winnow.service.export import recipe
from winnow.service.search_spec import parse_search_spec


def space_candidate(tiny_spec, **architecture) -> dict:
    """The least candidate of the tiny space (lr 1e-3: a random sampler's first draw never is),
    with ``architecture`` fields replaced."""
    space = parse_search_spec(tiny_spec()).search_space
    candidate = space.least().model_dump(mode="json")
    candidate["architecture"].update(architecture)
    return candidate


def write_recipe(path, candidate: dict) -> str:
    data = {
        "format": recipe.FORMAT,
        "candidate": candidate,
        "training": {"task": {"dataset": "digits"}, "epochs": 1, "seed": 0},
    }
    path.write_text(recipe.to_json(data))
    return str(path)


def first_trial_candidate(client, search_id: str) -> dict:
    trials = client.search(search_id).trials()
    return min(trials, key=lambda t: t["trial_id"])["candidate"]


def test_a_warm_started_search_proposes_the_recipes_candidate_first(client, tmp_path, tiny_spec):
    wanted = space_candidate(tiny_spec, width=32)
    path = write_recipe(tmp_path / "recipe.json", wanted)
    search = client.submit(tiny_spec(budget={"max_trials": 2}), warm_start=[path])
    search.wait()
    assert first_trial_candidate(client, search.id) == wanted

    plain = client.submit(tiny_spec(budget={"max_trials": 1}))
    plain.wait()
    assert first_trial_candidate(client, plain.id) != wanted  # the warm start made it first


def test_the_spec_field_and_the_cli_option_enqueue_in_order(client, tmp_path, tiny_spec, capsys):
    first, second = space_candidate(tiny_spec, width=64), space_candidate(tiny_spec, depth=2)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(tiny_spec(warm_start=[first], budget={"max_trials": 2})))
    recipe_path = write_recipe(tmp_path / "r.json", second)
    args = ["submit", str(spec_path), "--warm-start", recipe_path, "--wait", "--json", "--quiet"]
    assert main([*args, "--address", client.address]) == 0
    search_id = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["id"]
    trials = sorted(client.search(search_id).trials(), key=lambda t: t["trial_id"])
    assert [t["candidate"] for t in trials[:2]] == [first, second]


def test_a_recipe_outside_the_space_is_refused_naming_why(client, tmp_path, tiny_spec):
    path = write_recipe(tmp_path / "wide.json", space_candidate(tiny_spec, width=128))
    with pytest.raises(WinnowError) as raised:
        client.submit(tiny_spec(), warm_start=[path])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT.name
    message = raised.value.message
    assert "warm_start[0]" in message and "not a candidate of the space" in message
    assert "width" in message and "128" in message


def test_a_file_that_is_not_a_recipe_is_refused_before_sending(client, tmp_path, tiny_spec):
    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec()))
    with pytest.raises(SpecError, match="not a recipe"):
        client.submit(tiny_spec(), warm_start=[str(tmp_path / "spec.json")])
    with pytest.raises(SpecError, match="not a readable recipe"):
        client.submit(tiny_spec(), warm_start=[str(tmp_path / "missing.json")])


def test_a_resumed_search_enqueues_the_warm_starts_it_had_not_proposed(tmp_path, tiny_spec):
    """The study's queue lives in memory: a search that stopped after its first warm start
    has the second queued when it resumes, and not the first again."""
    from optuna.trial import TrialState

    from winnow.search_space.candidate import Candidate
    from winnow.service.engine import Engine
    from winnow.service.store import Store, sqlite_url
    from winnow.workers.executor import InProcessExecutor

    first, second = space_candidate(tiny_spec, width=64), space_candidate(tiny_spec, depth=2)
    spec = parse_search_spec(tiny_spec(warm_start=[first, second], budget={"max_trials": 1}))
    store = Store(sqlite_url(tmp_path / "w.db"))
    engine = Engine.create(spec, store, InProcessExecutor())
    engine.run()  # one candidate: the first warm start
    assert [json.loads(r.candidate) for r in store.trials(engine.search_id)] == [first]

    resumed = Engine.resume(store, engine.search_id, InProcessExecutor())
    waiting = resumed.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    queued = [t.system_attrs["fixed_params"] for t in waiting]  # how Optuna keeps enqueued ones
    assert queued == [resumed.space.to_optuna(Candidate(**second))[0]]
