"""The ``pytorch`` and ``lightning`` export formats: train.py trains as winnow trains (the stored
accuracy of a real trial, reproduced), imports only torch (and pytorch_optimizer where the
optimizer comes from it), the Lightning module fits the digits, and a missing extra is said to
the caller. Every bundle carries the real model.py (``pytorch_model.model_source``), so train.py
reproducing winnow's accuracy also checks that model.py starts from winnow's initial weights."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest
import torch

from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import load_dataset
from winnow.search_space.optimizers import OPTIMIZERS
from winnow.search_space.training import evaluate
from winnow.search_space.trial import Status, TrialSpec
from winnow.service import export
from winnow.service.cli import main
from winnow.service.client import WinnowError
from winnow.service.export import lightning_bundle, pytorch_bundle


def recipe_of(candidate: dict, epochs: int = 1, seed: int = 0, **metrics) -> dict:
    return {
        "format": "winnow.recipe/v1",
        "search_id": "s-test",
        "trial_id": 0,
        "candidate": Candidate(**candidate).model_dump(mode="json"),
        "training": {"task": {"dataset": "digits"}, "epochs": epochs, "seed": seed},
        "metrics": metrics,
    }


def write_bundle(folder: Path, bundle: dict[str, bytes]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, data in bundle.items():
        (folder / name).write_bytes(data)
    return folder


def run_script(folder: Path, *args: str, timeout: float = 300) -> dict:
    done = subprocess.run(
        [sys.executable, *args, "--json"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def top_level_imports(source: str) -> set[str]:
    """The top-level packages a script imports at module level (not inside functions)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def import_train(folder: Path, monkeypatch) -> ModuleType:
    """The bundle's train.py (and its model.py) imported here; forgotten after the test."""
    monkeypatch.syspath_prepend(str(folder))
    for name in ("model", "train"):
        monkeypatch.setitem(sys.modules, name, None)  # so that teardown forgets this test's
        del sys.modules[name]
    return importlib.import_module("train")


MLP = {"family": "mlp", "depth": 1, "width": 32, "activation": "relu", "dropout": 0.1}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def test_train_py_reproduces_the_stored_accuracy_of_a_real_trial(
    client, tmp_path, tiny_spec, monkeypatch
):
    """A search's recipe (warmup, a constant schedule, two epochs) exported as a pytorch bundle
    by the server (SDK and CLI alike): train.py, run alone with the recipe's seed, reaches the
    accuracy the search stored."""
    space = tiny_spec()["space"]
    space["optimizer"] |= {"warmup_epochs": 0.5, "schedule": "constant", "batch_size": 64}
    spec = tiny_spec(space=space, strategy={"name": "random", "rungs": [2]}, seed=3)
    spec["budget"] = {"max_trials": 1}
    search = client.submit(spec)
    search.wait()
    recipe = search.export(format="pytorch", path=tmp_path / "sdk")
    assert recipe["training"]["epochs"] == 2 and recipe["training"]["seed"] == 3
    args = [search.id, "--format", "pytorch", "--out", str(tmp_path / "cli")]
    assert main(["export", *args, "--address", client.address]) == 0

    names = {"model.py", "train.py", "requirements.txt", "README.md", "recipe.json"}
    names.add("weights.pt")  # the search kept the trial's weights (keep_weights: 5 by default)
    assert {p.name for p in (tmp_path / "cli").iterdir()} == names
    bundle = {name: (tmp_path / "sdk" / name).read_bytes() for name in names}
    assert bundle == {name: (tmp_path / "cli" / name).read_bytes() for name in names}
    kept = tmp_path / "cli" / "kept.pt"
    (tmp_path / "cli" / "weights.pt").rename(kept)
    result = run_script(tmp_path / "cli", "train.py", "--device", "cpu", "--save", "weights.pt")
    # within the 1 point: the search's worker ran with its own CPU thread count, and
    # a float sum split over other threads can move a sample (exact at equal threads: below)
    assert abs(result["accuracy"] - recipe["metrics"]["accuracy"]) <= 0.01
    assert (result["epochs"], result["seed"]) == (2, 3)
    stored = torch.load(kept, weights_only=True)  # the search's own, in the bundle
    retrained = torch.load(tmp_path / "cli" / "weights.pt", weights_only=True)
    assert stored.keys() == retrained.keys()

    # the README's way to use the weights: strict into build_model(), on preprocess(raw)
    train = import_train(tmp_path / "cli", monkeypatch)
    model = train.build_model()
    model.load_state_dict(torch.load(tmp_path / "cli" / "weights.pt"), strict=True)
    _, _, test_x, test_y = train.prepared_data()
    assert train.test_accuracy(model, test_x, test_y, torch.device("cpu")) == result["accuracy"]

    readme = bundle["README.md"].decode()
    assert f"Search `{search.id}`, trial {recipe['trial_id']}" in readme
    assert f"| accuracy | {recipe['metrics']['accuracy']} |" in readme
    assert "for 2 epochs" in readme and "seed 3" in readme
    assert json.loads(bundle["recipe.json"]) == recipe


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_train_py_trains_every_optimizer_as_winnow_does(optimizer, tmp_path, monkeypatch):
    """For each optimizer (torch's, pytorch_optimizer's, winnow's own LAMB): the copied
    factory, schedule and step give the accuracy and loss curve of winnow's evaluate."""
    candidate = {"architecture": MLP, "optimizer": {"name": optimizer, "warmup_epochs": 0.3}}
    spec = TrialSpec(Candidate(**candidate), "digits", epochs=1, seed=5)
    stored = evaluate(spec)
    assert stored.status == Status.OK, stored.error
    recipe = recipe_of(candidate, epochs=1, seed=5)
    folder = write_bundle(tmp_path, pytorch_bundle.files(recipe))

    source = (folder / "train.py").read_text()
    libraries = top_level_imports(source) - STDLIB - {"model"}
    from_library = pytorch_bundle.needs_pytorch_optimizer(recipe)
    assert libraries == ({"torch", "pytorch_optimizer"} if from_library else {"torch"})
    requirements = (folder / "requirements.txt").read_text()
    assert ("pytorch-optimizer>=" in requirements) == from_library
    assert requirements.startswith("torch>=")

    train = import_train(folder, monkeypatch)  # in this process: no interpreter start each

    result = train.main(["--device", "cpu", "--json"])
    assert result["accuracy"] == stored.metrics["accuracy"]
    assert result["loss"] == stored.loss_curve


def test_the_default_load_data_is_winnows_digits_split(tmp_path, monkeypatch):
    recipe = recipe_of({"architecture": MLP})
    folder = write_bundle(tmp_path, pytorch_bundle.files(recipe))
    train = import_train(folder, monkeypatch)

    train_x, train_y, test_x, test_y = train.load_data()
    digits = load_dataset("digits")
    assert train_x.shape == (1347, 1, 8, 8) and float(train_x.max()) == 16.0
    assert (train_x == digits.train_x).all() and (
        train.torch.as_tensor(test_y) == digits.test_y
    ).all()


def test_an_npz_task_reads_its_file_and_augments_as_winnow_does(tmp_path, monkeypatch):
    """uint8 3x32x32 images in an npz file: train.py's default load_data() reads the file as
    stored, and the padded crop and flip (drawn from the same generator as the order) give
    winnow's accuracy and loss curve; elsewhere, it asks for load_data() to be replaced."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 160)
    images = (rng.integers(0, 64, (160, 3, 32, 32)) + 60 * labels[:, None, None, None]).astype(
        np.uint8
    )
    data = tmp_path / "images.npz"
    np.savez(
        data, train_x=images[:120], train_y=labels[:120], test_x=images[120:], test_y=labels[120:]
    )
    candidate = {"architecture": MLP, "optimizer": {"name": "adam", "batch_size": 32}}
    stored = evaluate(TrialSpec(Candidate(**candidate), f"npz:{data}", epochs=2, seed=4))
    assert stored.status == Status.OK, stored.error
    recipe = recipe_of(candidate, epochs=2, seed=4)
    recipe["training"]["task"]["dataset"] = f"npz:{data}"
    folder = write_bundle(tmp_path / "bundle", pytorch_bundle.files(recipe))
    assert "scikit-learn" not in (folder / "requirements.txt").read_text()
    train = import_train(folder, monkeypatch)
    result = train.main(["--device", "cpu", "--json"])
    assert result["accuracy"] == stored.metrics["accuracy"]
    assert result["loss"] == stored.loss_curve

    data.unlink()
    with pytest.raises(NotImplementedError, match=r"replace load_data\(\).*images.npz"):
        train.load_data()


def test_a_task_read_from_elsewhere_asks_for_load_data_to_be_replaced(tmp_path, monkeypatch):
    recipe = recipe_of({"architecture": MLP})
    recipe["training"]["task"]["dataset"] = "cifar10"
    unused = "build_model = preprocess = None\n"  # load_data() fails before either is used
    folder = write_bundle(tmp_path, pytorch_bundle.files(recipe, lambda _: unused))
    train = import_train(folder, monkeypatch)
    with pytest.raises(NotImplementedError, match=r"replace load_data\(\).*searched on cifar10"):
        train.load_data()


@pytest.mark.parametrize("optimizer", ["adamw", "sophia"])  # sophia: the graph on refreshes
def test_the_lightning_module_fits_the_digits_for_one_epoch(optimizer, tmp_path):
    lr = {"adamw": 0.01, "sophia": 0.003}[optimizer]
    recipe = recipe_of({"architecture": MLP, "optimizer": {"name": optimizer, "lr": lr}})
    bundle = lightning_bundle.files(recipe)
    assert {"lightning_module.py", "fit.py", "model.py", "train.py"} <= set(bundle)
    assert "lightning>=" in bundle["requirements.txt"].decode()
    folder = write_bundle(tmp_path, bundle)
    fitted = run_script(folder, "fit.py", "--epochs", "1")
    trained = run_script(folder, "train.py", "--device", "cpu")
    assert fitted["epochs"] == 1 and fitted["accuracy"] > 0.3  # chance is 0.1
    # the same weights, order and steps as train.py: the same network (logged as a float32)
    assert fitted["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)


def test_a_missing_extra_says_what_to_install(client, tiny_spec, monkeypatch):
    search = client.submit(tiny_spec())
    search.wait()
    monkeypatch.setitem(sys.modules, "lightning", None)  # import lightning fails
    with pytest.raises(WinnowError, match="needs lightning") as raised:
        search.export(format="lightning")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION.name
    assert export.INSTALL in raised.value.message


def test_one_epoch_is_singular_in_the_readme_and_train_py():
    recipe = recipe_of({"architecture": MLP}, epochs=1)
    readme = pytorch_bundle.readme(recipe, "")
    assert "for 1 epoch (" in readme and "1 epochs" not in readme
    assert "for 3 epochs (" in pytorch_bundle.readme(recipe_of({"architecture": MLP}, epochs=3), "")
    source = pytorch_bundle.train_source(recipe)
    ast.parse(source)
    assert "{args.epochs} epochs" not in source
