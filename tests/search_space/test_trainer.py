"""The training function's interface (``search_space/trainer.py``): winnow's ``fit`` is its
default implementation; a user's ``task.trainer`` is called with the same arguments in the
worker, its checkpoint resumed or ignored (then each rung trains from scratch, still
correctly); the spec names it as user code and ``check_user_code`` imports it with clear
errors."""

from __future__ import annotations

import inspect
import textwrap
import uuid

import pytest

from winnow.search_space.candidate import Candidate
from winnow.search_space.specfile import SpecError
from winnow.search_space.trainer import ARGUMENTS, Fitted, TrainFunction, check_signature, fitted_of
from winnow.search_space.training import evaluate, fit
from winnow.search_space.trial import Status, TrialSpec
from winnow.search_space.user_code import UserCodeError
from winnow.service.search_spec import parse_search_spec

TRAINERS = """
from winnow.search_space.trainer import Fitted
from winnow.search_space.training import fit as winnows_fit

CALLS = []


def delegating(model, optimizer, scheduler, data, epochs, on_epoch, checkpoint, max_steps):
    CALLS.append((epochs, checkpoint is not None))
    return winnows_fit(model, optimizer, scheduler, data, epochs, on_epoch, checkpoint, max_steps)


def forgetful(model, optimizer, scheduler, data, epochs, on_epoch, checkpoint, max_steps):
    return winnows_fit(model, optimizer, scheduler, data, epochs, on_epoch, None, max_steps)


def wrong_return(model, optimizer, scheduler, data, epochs, *rest):
    return [1.0]


def two_arguments(model, optimizer):
    return None


NOT_CALLABLE = 3
"""


@pytest.fixture
def trainers(tmp_path, monkeypatch) -> str:
    name = f"winnow_trainers_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TRAINERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def mlp() -> Candidate:
    arch = {"family": "mlp", "depth": 1, "width": 16, "activation": "relu", "dropout": 0.0}
    optimizer = {"name": "adamw", "lr": 0.01, "batch_size": 64}
    return Candidate(architecture=arch, normalization="layernorm", optimizer=optimizer)


def rung(trainers: str, name: str, epochs: int, checkpoint) -> TrialSpec:
    return TrialSpec(
        mlp(),
        "digits",
        epochs=epochs,
        schedule_epochs=2,
        checkpoint=str(checkpoint),
        trainer=f"{trainers}:{name}",
    )


def test_winnows_fit_is_the_interface_it_documents():
    # The Protocol (what type checkers hold a trainer to) and fit take the same arguments.
    assert tuple(inspect.signature(TrainFunction.__call__).parameters)[1:] == ARGUMENTS
    assert tuple(inspect.signature(fit).parameters) == ARGUMENTS
    check_signature("winnow:fit", fit)  # raises if the interface's call could not reach it


def test_a_user_trainer_resumes_from_the_rungs_checkpoint(tmp_path, trainers):
    import importlib

    first = evaluate(rung(trainers, "delegating", 1, tmp_path / "c.ckpt"))
    second = evaluate(rung(trainers, "delegating", 2, tmp_path / "c.ckpt"))
    assert first.status == second.status == Status.OK, (first.error, second.error)
    assert importlib.import_module(trainers).CALLS == [(1, True), (2, True)]
    assert first.metrics["epochs_run"] == 1 and second.metrics["epochs_run"] == 1
    assert len(second.loss_curve) == 2 and second.loss_curve[0] == first.loss_curve[0]
    assert 0.3 < second.metrics["accuracy"] <= 1  # evaluation is winnow's


def test_a_user_trainer_that_ignores_the_checkpoint_trains_each_rung_from_scratch(
    tmp_path, trainers
):
    first = evaluate(rung(trainers, "forgetful", 1, tmp_path / "c.ckpt"))
    second = evaluate(rung(trainers, "forgetful", 2, tmp_path / "c.ckpt"))
    assert first.status == second.status == Status.OK, (first.error, second.error)
    assert first.metrics["epochs_run"] == 1 and second.metrics["epochs_run"] == 2
    assert not (tmp_path / "c.ckpt").exists()
    assert second.metrics["accuracy"] > 0.3


def test_a_trainer_returning_something_else_fails_its_trial_saying_what(tmp_path, trainers):
    result = evaluate(rung(trainers, "wrong_return", 1, tmp_path / "c.ckpt"))
    assert result.status == Status.FAILED
    assert "returned list, not a winnow.search_space.trainer.Fitted" in result.error
    assert result.metrics["params"] > 0  # what was known before training is kept


def spec_with(trainer: str) -> dict:
    return {
        "space": "digits-joint",
        "task": {"dataset": "digits", "trainer": trainer},
        "objectives": [{"name": "accuracy"}],
    }


def test_the_trainer_is_user_code_of_the_spec(trainers):
    spec = parse_search_spec(spec_with(f"{trainers}:delegating"))
    assert spec.imports() == {"task.trainer": f"{trainers}:delegating"}
    assert spec.task.training_key == f"digits|trainer={trainers}:delegating"
    assert parse_search_spec({**spec_with("x:y"), "task": {"dataset": "digits"}}).imports() == {}
    with pytest.raises(SpecError, match="task.trainer"):
        parse_search_spec(spec_with("not a path"))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nowhere_{uuid}:fit", "no module named"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}:NOT_CALLABLE", "int is not callable"),
        ("{module}:two_arguments", "a training function is called as fit(model, optimizer"),
    ],
)
def test_check_user_code_imports_the_trainer_with_clear_errors(trainers, name, message):
    path = name.format(module=trainers, uuid=uuid.uuid4().hex[:6])
    spec = parse_search_spec(spec_with(path))
    with pytest.raises(SpecError) as raised:
        spec.check_user_code(load=False)
    assert "task.trainer" in str(raised.value) and message in str(raised.value)
    parse_search_spec(spec_with(f"{trainers}:delegating")).check_user_code(load=False)


def test_check_signature_accepts_defaults_and_star_args():
    def starred(*args):
        return args

    def named(net, opt, sched, data, epochs, on_epoch=None, checkpoint=None, max_steps=None):
        return net

    check_signature("a:starred", starred)
    check_signature("a:named", named)
    with pytest.raises(UserCodeError, match="cannot take that"):
        check_signature("a:few", lambda model, optimizer, scheduler: None)


def test_winnow_evaluate_trains_a_recipe_with_its_tasks_trainer(tmp_path, trainers, capsys):
    import importlib
    import json

    from winnow.service.cli.main import main
    from winnow.service.export.recipe import FORMAT

    recipe = {
        "format": FORMAT,
        "candidate": mlp().model_dump(mode="json"),
        "training": {
            "task": {"dataset": "digits", "trainer": f"{trainers}:delegating"},
            "epochs": 1,
            "seed": 0,
        },
    }
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    assert main(["evaluate", "--recipe", str(tmp_path / "recipe.json"), "--json", "--quiet"]) == 0
    assert importlib.import_module(trainers).CALLS == [(1, False)]
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.3


@pytest.mark.parametrize(
    ("fitted", "max_steps", "message"),
    [
        (Fitted([1.0, 0.9], 2.0), None, "must be an int"),
        (Fitted([1.0, 0.9], True), None, "must be an int"),
        (Fitted([1.0], 1), None, "must hold the loss of every one"),
        (Fitted([1.0], 0), 5, "must train"),
        (Fitted([1.0, 0.9, 0.8], 3), None, "asked for 2 epochs"),
    ],
)
def test_fitted_of_refuses_what_a_trainer_cannot_have_done(fitted, max_steps, message):
    with pytest.raises(UserCodeError, match=message) as raised:
        fitted_of("pkg:fit", fitted, 2, max_steps)
    assert "task.trainer pkg:fit" in str(raised.value)


def test_fitted_of_accepts_a_full_resumed_curve_and_a_step_capped_one():
    assert fitted_of("pkg:fit", Fitted([1.0, 0.9], 0), 2) == Fitted([1.0, 0.9], 0)
    assert fitted_of("pkg:fit", Fitted([1.0], 1), 2, max_steps=10) == Fitted([1.0], 1)
