"""SearchSpec: YAML/JSON/Python, defaults, and errors that name the field."""

from __future__ import annotations

import re

import pytest

from winnow.search_space.spec import SpecError
from winnow.search_space.specfile import SpecFileError
from winnow.service.search_spec import Constraint, SearchSpec, load_search_spec, parse_search_spec

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
        ({"objectives": [{"name": "accuracy", "direction": "up"}]}, "objectives[0].direction"),
        ({"constraints": ["params ~ 3"]}, "constraints[0]"),
        ({"strategy": {"rungs": [3, 1]}}, "strategy.rungs"),
        ({"strategy": {"screen": {"proxies": ["nope"]}}}, "strategy.screen.proxies[0]"),
        ({"strategy": {"screen": {"keep_fraction": 0}}}, "strategy.screen.keep_fraction"),
        ({"budget": {"max_trials": 0}}, "budget.max_trials"),
        ({"space": "no-such-space"}, "space"),
        (
            {"space": {"architecture": {"family": "nb201"}, "normalization": "x"}},
            "space.normalization",
        ),
        ({"objectives": [{"name": "a"}, {"name": "a"}]}, "objectives"),
        ({"surprise": 1}, "surprise"),
        ({"strategy": {"name": "annealing"}}, "strategy.name"),
        ({"strategy": {"sampler": "annealing"}}, "strategy.sampler"),
        ({"task": {"dataset": "imagenet"}}, "task.dataset"),
        ({"task": {"dataset": "npz:"}}, "task.dataset"),
        ({"task": {"dataset": "npz"}}, "task.dataset"),
        ({"task": {"dataset": "synthetic:0"}}, "task.dataset"),
        ({"task": {"dataset": "synthetic:-3x32x32"}}, "task.dataset"),
        ({"task": {"dataset": "synthetic:3x100000x100000"}}, "task.dataset"),
    ],
)
def test_errors_name_the_field(change, field):
    with pytest.raises(SpecError, match=f"field {re.escape(repr(field))}"):
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
    for check_names in (True, False):  # metrics need no registry: the client checks them too
        with pytest.raises(SpecError) as caught:
            parse_search_spec(data, check_names=check_names)
        message = str(caught.value)
        assert f"field '{field}': unknown metric" in message
        assert "allowed: accuracy, params, flops, model_bytes, bitops, latency_ms" in message


def test_one_error_lists_every_problem_with_what_is_allowed():
    """An unknown field, a typo inside a section and an unknown metric: the shape's and the
    names' problems arrive together, each with the allowed fields or names."""
    data = {**BASE, "colour": 1, "budget": {"max_trals": 3}, "objectives": [{"name": "acuracy"}]}
    with pytest.raises(SpecError) as raised:
        parse_search_spec(data)
    message = str(raised.value)
    assert message.count("invalid search spec:") == 1
    assert (
        "field 'colour': unknown field; allowed: name, space, task, objectives, constraints, "
        "budget, strategy, seed" in message
    )
    assert (
        "field 'budget.max_trals': unknown field; allowed: max_trials, max_epochs, max_seconds"
        in message
    )
    assert "field 'objectives[0].name': unknown metric 'acuracy'; allowed: accuracy" in message
    assert [p[0] for p in raised.value.problems] == [
        "budget.max_trals",
        "colour",
        "objectives[0].name",
    ]


def test_an_inline_spaces_problems_are_the_specs_fields_under_one_heading():
    space = {
        "architecture": {"family": "nb201", "opps": ["none"]},
        "normalization": "x",
        "quantization": {"scope": "rack"},
    }
    data = {**BASE, "space": space, "task": {"dataset": "imagenet"}, "strategy": {"rungs": [3, 1]}}
    with pytest.raises(SpecError) as raised:
        parse_search_spec(data)
    message = str(raised.value)
    assert message.count("invalid") == 1  # no "invalid search space:" nested inside
    assert "field 'space.architecture.opps': unknown field; allowed: family, ops, cell" in message
    assert "field 'space.normalization': 'x' is not allowed; allowed: batchnorm" in message
    assert (
        "field 'space.quantization.scope': 'rack' is not allowed; allowed: global, group" in message
    )
    assert "field 'task.dataset': unknown dataset 'imagenet'; allowed: digits" in message
    assert "field 'strategy.rungs'" in message  # the shape's error, beside the names'


@pytest.mark.parametrize(
    ("architecture", "line"),
    [
        (
            {"family": "nb2001"},
            "field 'space.architecture.family': unknown family 'nb2001'; "
            "allowed: nb201, macro, mlp",
        ),
        ({}, "field 'space.architecture.family': missing; allowed: nb201, macro, mlp"),
    ],
)
def test_an_unknown_family_lists_the_registered_ones(architecture, line):
    with pytest.raises(SpecError) as raised:
        parse_search_spec({**BASE, "space": {"architecture": architecture}})
    assert line in str(raised.value)


def test_every_unknown_proxy_and_constraint_is_named():
    data = {**BASE, "strategy": {"screen": {"proxies": ["synflow", "nope", "zilch"]}}}
    with pytest.raises(SpecError) as raised:
        parse_search_spec({**data, "constraints": ["params <= 5", "flops ~ 3", "x > 1 2"]})
    fields = [field for field, _ in raised.value.problems]
    assert fields == [
        "constraints[1]",
        "constraints[2]",
        "strategy.screen.proxies[1]",
        "strategy.screen.proxies[2]",
    ]


def test_a_max_epochs_below_the_first_rung_is_refused():
    """It would start nothing, and the search would end failed without training anything."""
    spec = {**BASE, "budget": {"max_epochs": 2}, "strategy": {"name": "random", "rungs": [3, 9]}}
    with pytest.raises(SpecError, match="field 'budget.max_epochs': 2 is below the first rung's 3"):
        parse_search_spec(spec)
    parse_search_spec({**spec, "budget": {"max_epochs": 3}})  # one first-rung run fits


def test_the_shape_check_also_names_unknown_metrics_without_the_registries():
    """What the client SDK checks before it submits (no torch): the shape's problems and the
    metrics' names together, so a user fixes the spec in one round."""
    bad = {**BASE, "objectives": [{"name": "acuracy"}], "budget": {"max_trals": 3}}
    with pytest.raises(SpecError) as raised:
        parse_search_spec(bad, check_names=False)
    message = str(raised.value)
    assert "field 'budget.max_trals': unknown field" in message
    assert "field 'objectives[0].name': unknown metric 'acuracy'" in message


@pytest.mark.parametrize(
    ("dataset", "says"),
    [
        ("npz:", "npz needs a path"),
        ("synthetic:0", "sizes must be positive"),
        ("synthetic:3x-1x4", "sizes must be positive"),
        ("synthetic:3x10000x10000", "at most 150528 values"),
    ],
)
def test_a_dataset_argument_its_loader_refuses_is_a_spec_error(dataset, says):
    # Checked with the names, before any work: a worker would otherwise fail every trial.
    with pytest.raises(SpecError, match=f"field 'task.dataset': .*{says}"):
        parse_search_spec({**BASE, "task": {"dataset": dataset}})
    parse_search_spec({**BASE, "task": {"dataset": "synthetic:3x8x8"}})  # a valid one passes


MLP = {"family": "mlp", "depth": [1, 2], "width": [16]}


def _mlp_space(architecture=None, **optimizer):
    optimizer = {"name": "adamw", "lr": {"low": 1e-4, "high": 1e-2}, **optimizer}
    return {"space": {"architecture": {**MLP, **(architecture or {})}, "optimizer": optimizer}}


def _macro_space(**architecture):
    arch = {"family": "macro", "base_channels": [16, 24], "strides": [1, 2], **architecture}
    return {"space": {"architecture": arch}}


def _nb201_space(**architecture):
    return {"space": {"architecture": {"family": "nb201", **architecture}}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_mlp_space(lr={"low": float("-inf"), "high": 1e-2}), "space.optimizer.lr"),
        (_mlp_space(lr=float("nan")), "space.optimizer.lr"),
        (_mlp_space(lr=[1e-3, float("inf")]), "space.optimizer.lr"),
        (
            {"objectives": [{"name": "accuracy", "reference": float("nan")}]},
            "objectives[0].reference",
        ),
        ({"constraints": ["params <= 1e999"]}, "constraints[0].value"),
        (
            {"constraints": [{"metric": "params", "op": "<=", "value": float("nan")}]},
            "constraints[0].value",
        ),
        ({"budget": {"max_seconds": float("inf")}}, "budget.max_seconds"),
        ({"budget": {"max_trials": 2**31}}, "budget.max_trials"),
        ({"budget": {"max_trials": 1_000_001}}, "budget.max_trials"),
        ({"budget": {"max_proposals": 2**31}}, "budget.max_proposals"),
        ({"budget": {"max_epochs": 2**31}}, "budget.max_epochs"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        (_mlp_space(batch_size=0), "space.optimizer.batch_size"),
        (_mlp_space(batch_size=[64, -8]), "space.optimizer.batch_size"),
        (_mlp_space(warmup_epochs=100_000), "space.optimizer.warmup_epochs"),
        (_mlp_space({"depth": 3000}), "space.architecture.depth"),
        (_mlp_space({"width": {"low": 16, "high": 100_000}}), "space.architecture.width"),
        (_mlp_space({"dropout": 1.5}), "space.architecture.dropout"),
        ({"strategy": {"rungs": [1, 100_000]}}, "strategy.rungs"),
        ({"name": "x" * 201}, "name"),
        ({"strategy": {"reduction_factor": 17}}, "strategy.reduction_factor"),
        ({"strategy": {"pruned_window": 100_001}}, "strategy.pruned_window"),
        ({"strategy": {"screen": {"population": 100_001}}}, "strategy.screen.population"),
        ({"strategy": {"screen": {"min_population": 10**9}}}, "strategy.screen.min_population"),
        ({"strategy": {"screen": {"calibrate_after": 2**40}}}, "strategy.screen.calibrate_after"),
        ({"strategy": {"screen": {"refit_every": 2**40}}}, "strategy.screen.refit_every"),
        ({"task": {"dataset": "digits", "input_shape": []}}, "task.input_shape"),
        ({"task": {"dataset": "digits", "input_shape": [1, 1, 1, 1, 1]}}, "task.input_shape"),
        ({"task": {"dataset": "digits", "input_shape": [64, 4097]}}, "task.input_shape"),
        ({"task": {"dataset": "digits", "input_shape": [0]}}, "task.input_shape"),
        ({"task": {"dataset": "digits", "num_classes": 1}}, "task.num_classes"),
        ({"task": {"dataset": "digits", "num_classes": 100_001}}, "task.num_classes"),
        (_macro_space(base_channels=[16, 100_000]), "space.architecture.base_channels"),
        (_macro_space(base_channels=[16] * 9, strides=[1] * 9), "space.architecture.base_channels"),
        (_macro_space(strides=[1, 9]), "space.architecture.strides"),
        (_macro_space(stem_channels=0), "space.architecture.stem_channels"),
        (_macro_space(head_channels=10**6), "space.architecture.head_channels"),
        (_macro_space(width_mult=[1.0, 100.0]), "space.architecture.width_mult"),
        (_macro_space(resolution=100_000), "space.architecture.resolution"),
        (_nb201_space(channels=10**6), "space.architecture.channels"),
        (_nb201_space(cells_per_stage=1000), "space.architecture.cells_per_stage"),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused_naming_the_field(change, field):
    with pytest.raises(SpecError, match=f"field {re.escape(repr(field))}"):
        parse_search_spec({**BASE, **change})


def test_the_limits_themselves_are_accepted():
    limits = {
        "name": "x" * 200,
        "seed": 2**32 - 1,
        "budget": {"max_trials": 1_000_000, "max_proposals": 100_000_000},
        "strategy": {"rungs": [1, 10_000]},
        **_mlp_space({"depth": 64, "width": [1, 16384]}, batch_size=65536),
    }
    spec = parse_search_spec({**BASE, **limits})
    assert spec.budget.proposals == 100_000_000 and spec.search_space.architecture.depth == 64
    small = {
        "strategy": {"reduction_factor": 16, "screen": {"population": 100_000}},
        "task": {"dataset": "digits", "input_shape": [4096, 1, 1, 1], "num_classes": 100_000},
        **_macro_space(base_channels=[16384] * 8, strides=[4] * 8, width_mult=8.0),
    }
    spec = parse_search_spec({**BASE, **small}, check_names=False)
    assert spec.strategy.reduction_factor == 16 and spec.task.input_shape == (4096, 1, 1, 1)
    assert SearchSpec.resolve_space(spec.space).architecture.base_channels == [16384] * 8


def test_imports_of_a_space_that_does_not_resolve_fail_closed():
    """What an unresolvable space would import cannot be known: the check refuses, it does
    not answer "nothing" (which a server would take as allowed)."""
    from winnow.service.api.allowed_modules import check_imports

    spec = parse_search_spec({"space": "digits-joint", "task": {"dataset": "digits"}})
    broken = spec.model_copy(update={"space": {"architecture": {"family": "no-such-family"}}})
    with pytest.raises(ValueError):
        broken.imports()
    with pytest.raises(ValueError):
        check_imports(broken, ("anything",))
    assert spec.imports() == {}


def test_eval_every_epoch_is_on_by_default_reaches_each_training_and_a_typo_is_refused():
    from types import SimpleNamespace

    from winnow.search_space import Candidate
    from winnow.service.engine.training import train_spec

    tracked = SimpleNamespace(candidate=Candidate(architecture={"family": "mlp"}))
    on = parse_search_spec(BASE)
    off = parse_search_spec({**BASE, "task": {"dataset": "digits", "eval_every_epoch": False}})
    assert train_spec(on, tracked, 3, "cpu").epoch_accuracy is True
    assert train_spec(off, tracked, 3, "cpu").epoch_accuracy is False
    assert train_spec(off, tracked, 3, "cpu", seed=7).epoch_accuracy is False  # a confirmation
    with pytest.raises(SpecError, match=r"'task\.eval_every_epochs': unknown field"):
        parse_search_spec({**BASE, "task": {"dataset": "digits", "eval_every_epochs": False}})
