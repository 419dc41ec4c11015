"""SearchSpec: YAML/JSON/Python, defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from winnow.search_space.spec import SpecError
from winnow.search_space.specfile import SpecFileError
from winnow.service.search_spec import Constraint, load_search_spec, parse_search_spec

BASE = {"space": "nb201", "task": {"dataset": "digits"}}


def test_yaml_spec_with_every_section(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nspace: nb201\ntask: {dataset: digits}\n"
        "objectives: [{name: accuracy}, {name: params, direction: minimize, reference: 2.0e6}]\n"
        "constraints: ['params <= 1e6', {metric: flops, op: '<', value: 5}]\n"
        "budget: {max_trials: 7, max_seconds: 60}\n"
        "strategy: {name: cascade, sampler: nsga2, rungs: [1, 3], reduction_factor: 2,\n"
        "           screen: {proxies: [synflow, params], keep_fraction: 0.5}}\nseed: 3\n"
    )
    spec = load_search_spec(path)
    assert spec.directions == ["maximize", "minimize"]
    assert spec.constraints[0] == Constraint(metric="params", op="<=", value=1e6)
    assert spec.constraints[1].satisfied({"flops": 4.0}) is True
    assert spec.constraints[0].satisfied({"params": 2e6}) is False
    assert spec.constraints[0].satisfied({}) is None
    assert spec.strategy.sampler_name == "nsga2" and spec.strategy.cascade
    assert spec.budget.proposals == 350
    assert spec.search_space.architecture.family == "nb201"


def test_defaults_and_key_are_stable():
    a, b = parse_search_spec(BASE), parse_search_spec(dict(BASE))
    assert a.strategy.name == "cascade" and a.strategy.rungs == [1, 3, 9]
    assert a.objectives[0].name == "accuracy" and a.key == b.key


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"objectives": [{"name": "accuracy", "direction": "up"}]}, "objectives.0.direction"),
        ({"constraints": ["params ~ 3"]}, "constraints"),
        ({"strategy": {"rungs": [3, 1]}}, "strategy.rungs"),
        ({"strategy": {"screen": {"proxies": ["nope"]}}}, "strategy.screen.proxies"),
        ({"strategy": {"screen": {"keep_fraction": 0}}}, "strategy.screen.keep_fraction"),
        ({"budget": {"max_trials": 0}}, "budget.max_trials"),
        ({"space": "no-such-space"}, "space"),
        ({"space": {"architecture": {"family": "nb201"}, "normalization": "x"}}, "space"),
        ({"objectives": [{"name": "a"}, {"name": "a"}]}, "objectives"),
        ({"surprise": 1}, "surprise"),
        ({"strategy": {"name": "annealing"}}, "strategy.name"),
        ({"strategy": {"sampler": "annealing"}}, "strategy.sampler"),
        ({"task": {"dataset": "imagenet"}}, "task.dataset"),
    ],
)
def test_errors_name_the_field(change, field):
    with pytest.raises(SpecError, match=f"field '{field}"):
        parse_search_spec({**BASE, **change})


def test_stated_task_shape_and_classes_are_checked_against_the_dataset():
    parse_search_spec(
        {**BASE, "task": {"dataset": "digits", "num_classes": 10}}
    ).task.check_dataset()
    wrong = parse_search_spec({**BASE, "task": {"dataset": "digits", "input_shape": [3, 8, 8]}})
    with pytest.raises(SpecError, match="field 'task.input_shape'"):
        wrong.task.check_dataset()
    wrong = parse_search_spec({**BASE, "task": {"dataset": "digits", "num_classes": 3}})
    with pytest.raises(SpecError, match="field 'task.num_classes'"):
        wrong.task.check_dataset()


def test_names_are_checked_apart_from_the_shape():
    unknown = {**BASE, "task": {"dataset": "imagenet"}, "strategy": {"name": "annealing"}}
    spec = parse_search_spec(unknown, check_names=False)  # what the client SDK does
    assert spec.strategy.name == "annealing"
    with pytest.raises(SpecError) as raised:
        spec.check_names()
    message = str(raised.value)
    assert "field 'task.dataset': unknown dataset 'imagenet'" in message
    assert "field 'strategy.name': unknown strategy 'annealing'" in message
    assert "allowed: random, tpe, nsga2, gp, cascade" in message
    with pytest.raises(SpecError, match="field 'budget.max_trials'"):  # the shape, always
        parse_search_spec({**BASE, "budget": {"max_trials": 0}}, check_names=False)


def test_strategies_are_the_sampler_registrys_names_and_cascade(monkeypatch):
    from winnow.search_space.registry import Registry
    from winnow.service.engine import sampling

    samplers = Registry("sampler")
    samplers.register("annealing", lambda seed, parallel: None)
    monkeypatch.setattr(sampling, "SAMPLERS", samplers)
    parse_search_spec({**BASE, "strategy": {"name": "annealing", "sampler": "annealing"}})
    with pytest.raises(SpecError, match="unknown strategy 'tpe'; allowed: annealing, cascade"):
        parse_search_spec({**BASE, "strategy": {"name": "tpe", "sampler": "annealing"}})


def test_spec_file_errors_name_the_file_and_the_field(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("space: nb201\ntask: {dataset: digits}\nbudget: {max_trials: 0}\n")
    with pytest.raises(SpecFileError, match=r"s\.yaml: invalid search spec:\n  field 'budget"):
        load_search_spec(path)
    path.write_text("- just a list\n")
    with pytest.raises(SpecFileError, match="a search spec is a mapping with 'space' and 'task'"):
        load_search_spec(path)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"objectives": [{"name": "size"}]}, "objectives[0].name"),
        ({"objectives": [{"name": "accuracy"}, {"name": "paramz"}]}, "objectives[1].name"),
        ({"constraints": ["paramz <= 5"]}, "constraints[0]"),
    ],
)
def test_objectives_and_constraints_must_name_a_trained_metric(extra, field):
    data = {"space": "nb201", "task": {"dataset": "digits"}, **extra}
    parse_search_spec(data, check_names=False)  # the shape is fine
    with pytest.raises(SpecError) as caught:
        parse_search_spec(data)
    message = str(caught.value)
    assert f"field '{field}': unknown metric" in message
    assert "allowed: accuracy, params, flops, model_bytes, bitops, latency_ms" in message
