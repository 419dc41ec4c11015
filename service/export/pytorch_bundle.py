"""The ``pytorch`` export format: a folder that trains and runs the recipe without winnow.

- ``model.py``: the network as plain PyTorch (``build_model()``, ``preprocess(x)``), written by
  ``pytorch_model.model_source``;
- ``train.py``: trains ``build_model()`` as winnow's ``training.evaluate`` does (seeding, the
  shuffled batches of the training split, cross-entropy, the recipe's optimizer, warmup and
  schedule stepped per optimizer step, the test accuracy in eval mode) on the data that
  ``load_data()`` returns, a function the user replaces; it imports torch and, for the
  optimizers that come from it, ``pytorch_optimizer``. The numbers are winnow's: the optimizer
  factory, the LR multiplier, backward-and-step and the augmentation are copied from winnow's
  source (``sources.py``), so on the same data and seed it reaches the stored accuracy;
- ``requirements.txt``, ``README.md`` (the recipe and what it scored) and ``recipe.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import requires
from string import Template
from typing import Any

from winnow.records import epochs_text
from winnow.service.export import recipe as recipe_format
from winnow.service.export import weights
from winnow.service.export.sources import definitions, function_names_used, imported_from

ModelSource = Callable[[dict[str, Any]], str]  # recipe -> the text of model.py

OPTIMIZERS_MODULE = "winnow.search_space.optimizers"
DIGITS = "digits"


def default_model_source() -> ModelSource:
    """``pytorch_model.model_source``: the torch-only ``model.py`` of a recipe (imported when
    a bundle is written: it imports torch, which ``winnow --help`` must not)."""
    from winnow.service.export.pytorch_model import model_source

    return model_source


def files(recipe: dict[str, Any], model_source: ModelSource | None = None) -> dict[str, bytes]:
    """The ``pytorch`` bundle of ``recipe`` (see the module docstring)."""
    model = (model_source or default_model_source())(recipe)
    script = train_source(recipe)
    bundle = {
        "model.py": model.encode(),
        "train.py": script.encode(),
        "requirements.txt": requirements(recipe).encode(),
        "README.md": readme(recipe, PYTORCH_USAGE).encode(),
        **recipe_format.files(recipe),
    }
    trained = weights.kept_bytes(recipe)  # the trial's trained state_dict, when it was kept
    if trained is not None:
        bundle[weights.FILE_NAME] = trained
    return bundle


# --- requirements --------------------------------------------------------------------------


def _winnow_requirement(name: str) -> str:
    """Winnow's own requirement on ``name`` (``torch>=2.4``): the bundle needs what winnow was
    tested with, said once, in pyproject.toml."""
    for line in requires("winnow") or []:
        if line.split(">")[0].split("=")[0].split(";")[0].strip() == name and ";" not in line:
            return line
    return name


def optimizer_imports(name: str) -> dict[str, str]:
    """``{name: module}`` of what optimizer ``name``'s factory imports (``Lion`` from
    ``pytorch_optimizer``, ``Lamb`` from winnow's ``lamb``)."""
    factory = _factory_name(name)
    return imported_from(OPTIMIZERS_MODULE, function_names_used(OPTIMIZERS_MODULE, factory))


def needs_pytorch_optimizer(recipe: dict[str, Any]) -> bool:
    imports = optimizer_imports(recipe["candidate"]["optimizer"]["name"])
    return "pytorch_optimizer" in imports.values()


def requirements(recipe: dict[str, Any], extra: tuple[str, ...] = ()) -> str:
    lines = [_winnow_requirement("torch")]
    if needs_pytorch_optimizer(recipe):
        lines.append(_winnow_requirement("pytorch-optimizer"))
    lines.extend(extra)
    if recipe["training"]["task"]["dataset"] == DIGITS:
        lines.append("scikit-learn  # only for train.py's default load_data(): the digits")
    return "\n".join(lines) + "\n"


# --- train.py ------------------------------------------------------------------------------


def _factory_name(optimizer: str) -> str:
    from winnow.search_space.optimizers import OPTIMIZERS  # torch: only when writing a bundle

    return OPTIMIZERS.get(optimizer).factory.__name__


def _optimizer_settings(candidate: dict[str, Any]) -> dict[str, Any]:
    """What train.py's constants say of the optimizer: every hyperparameter (the entry's
    defaults filled in, as ``build_optimizer`` does) and the training fields."""
    from winnow.search_space.candidate import Candidate
    from winnow.search_space.optimizers import OPTIMIZERS

    built = Candidate(**candidate)
    entry = OPTIMIZERS.get(built.optimizer["name"])
    return {
        "name": entry.name,
        "factory": entry.factory.__name__,
        "hyperparameters": {**entry.defaults, **built.hyperparameters},
        "needs_hessian": entry.needs_hessian,
        "batch_size": built.batch_size,
        "schedule": built.optimizer.get("schedule", "cosine"),
        "warmup_epochs": built.optimizer.get("warmup_epochs", 0),
        "mixed_precision": built.quantization.is_float,
    }


def _optimizer_code(factory: str) -> tuple[str, str]:
    """(import lines, definitions) of an optimizer factory copied from winnow: the libraries it
    imports become imports, winnow's own classes (``Lamb``) are copied in."""
    imports, copied = [], []
    used = function_names_used(OPTIMIZERS_MODULE, factory)
    for name, module in sorted(imported_from(OPTIMIZERS_MODULE, used).items()):
        if module.startswith("winnow."):
            copied.append(definitions(module, [name]))
        else:
            imports.append(f"from {module} import {name}")
    copied.append(definitions(OPTIMIZERS_MODULE, [factory]))
    return "\n".join(imports), "\n\n\n".join(copied)


def _load_data_code(dataset: str) -> str:
    name, _, argument = dataset.partition(":")
    if dataset == DIGITS:
        return DIGITS_LOAD_DATA.strip()
    if name == "npz" and argument:
        return NPZ_LOAD_DATA.substitute(path=repr(argument)).strip()
    return OTHER_LOAD_DATA.substitute(dataset=repr(dataset)).strip()


def train_source(recipe: dict[str, Any]) -> str:
    """The text of ``train.py`` for ``recipe``."""
    settings = _optimizer_settings(recipe["candidate"])
    imports, optimizer = _optimizer_code(settings["factory"])
    training = recipe["training"]
    return TRAIN_PY.substitute(
        summary=_summary(recipe),
        optimizer_imports=imports + "\n" if imports else "",
        task=repr(training["task"]["dataset"]),
        epochs=int(training["epochs"]),
        seed=int(training["seed"]),
        batch_size=settings["batch_size"],
        optimizer_name=repr(settings["name"]),
        hyperparameters=repr(settings["hyperparameters"]),
        needs_hessian=settings["needs_hessian"],
        schedule=repr(settings["schedule"]),
        warmup_epochs=repr(settings["warmup_epochs"]),
        mixed_precision=settings["mixed_precision"],
        load_data=_load_data_code(training["task"]["dataset"]),
        optimizer_code=optimizer,
        factory=settings["factory"],
        schedule_code=definitions("winnow.search_space.schedules", ["lr_multiplier"]),
        step_code=definitions(OPTIMIZERS_MODULE, ["backward_and_step"]),
        augment_code=definitions("winnow.search_space.datasets", ["crop_flip"]),
    ).lstrip()


def _summary(recipe: dict[str, Any]) -> str:
    where = f"trial {recipe.get('trial_id')} of search {recipe.get('search_id')}"
    return f"the winnow recipe of {where}"


TRAIN_PY = Template('''
"""Train ${summary} as winnow trained it.

    python train.py [--epochs N] [--seed S] [--device cpu|cuda|auto] [--save weights.pt] [--json]

Replace ``load_data()`` below to train on your own data: it returns the training and test
inputs and labels as the task's source gives them (``preprocess`` of model.py normalizes them
as winnow did). Everything else is the recipe: the optimizer, its warmup and schedule, the
batch size, the epochs and the seed, and winnow's training loop (copied from winnow's
search_space/training.py, optimizers.py, schedules.py and datasets.py). On the search's data with
the recipe's seed it reaches the accuracy that the search stored for this trial (README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import random
import statistics
import warnings

import torch
import torch.nn.functional as F
${optimizer_imports}
from model import build_model, preprocess

# --- the recipe ---------------------------------------------------------------------------------
TASK = ${task}  # the dataset winnow searched on
EPOCHS = ${epochs}  # the epochs of the trial's highest trained rung
SEED = ${seed}
BATCH_SIZE = ${batch_size}
OPTIMIZER = ${optimizer_name}
HYPERPARAMETERS = ${hyperparameters}
NEEDS_HESSIAN = ${needs_hessian}  # backward builds the graph before each Hessian refresh
SCHEDULE = ${schedule}
WARMUP_EPOCHS = ${warmup_epochs}
MIXED_PRECISION = ${mixed_precision}  # bf16 autocast on a CUDA GPU (float models only)
EVAL_BATCH = 512


# --- the data: replace load_data() with your own -------------------------------------------------
${load_data}


# --- the optimizer (copied from winnow) ----------------------------------------------------------
${optimizer_code}


def make_optimizer(params) -> torch.optim.Optimizer:
    optimizer = ${factory}(params, HYPERPARAMETERS)
    optimizer.winnow_needs_hessian = NEEDS_HESSIAN  # read by backward_and_step
    return optimizer


# --- the learning-rate schedule (copied from winnow) ---------------------------------------------
${schedule_code}


def make_scheduler(optimizer, steps_per_epoch: int, epochs: int):
    """Warmup then the schedule, stepped once per optimizer step, as winnow steps it."""
    multiplier = functools.partial(
        lr_multiplier,
        warmup_steps=round(WARMUP_EPOCHS * steps_per_epoch),
        total_steps=epochs * steps_per_epoch,
        schedule=SCHEDULE,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


# --- backward and step (copied from winnow) ------------------------------------------------------
${step_code}


# --- augmentation of 32x32 and larger images (copied from winnow) --------------------------------
${augment_code}


def augments(x: torch.Tensor) -> bool:
    """Winnow augments images of 32x32 or larger (a padded random crop and a flip)."""
    return x.dim() == 4 and min(x.shape[2:]) >= 32


# --- training as winnow trains -------------------------------------------------------------------
def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (the weights' initialization); the generator returned
    shuffles the batches and draws the augmentation."""
    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy

        numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device):
    if (
        MIXED_PRECISION
        and device.type == "cuda"
        and torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(model, x, y, epochs: int, generator: torch.Generator, device) -> list[float]:
    """Train on preprocessed inputs ``x`` and labels ``y``; the mean loss of each epoch."""
    optimizer = make_optimizer(model.parameters())
    steps_per_epoch = math.ceil(len(y) / BATCH_SIZE)
    scheduler = make_scheduler(optimizer, steps_per_epoch, epochs)
    curve = []
    for epoch in range(epochs):
        model.train()
        losses = []
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), BATCH_SIZE):
            index = order[start : start + BATCH_SIZE]
            batch_x, batch_y = x[index].to(device), y[index].to(device)
            if augments(batch_x):
                batch_x = crop_flip(batch_x, generator)
            if len(batch_y) < 2:  # batch statistics need two samples
                continue
            with autocast(device):
                loss = F.cross_entropy(model(batch_x), batch_y)
            if not torch.isfinite(loss):
                raise ArithmeticError(f"loss became {loss.item()} at epoch {epoch + 1}")
            backward_and_step(optimizer, loss)
            scheduler.step()
            losses.append(loss.item())
        curve.append(statistics.fmean(losses))
    return curve


@torch.no_grad()
def test_accuracy(model, x, y, device: torch.device) -> float:
    """Top-1 accuracy in eval mode, as a fraction."""
    model.eval()
    correct = 0
    for start in range(0, len(y), EVAL_BATCH):
        batch_x = x[start : start + EVAL_BATCH].to(device)
        predicted = model(batch_x).argmax(1).cpu()
        correct += (predicted == y[start : start + EVAL_BATCH]).sum().item()
    return correct / len(y)


def prepared_data():
    """``load_data()``'s arrays as tensors: inputs preprocessed, labels as int64."""
    train_x, train_y, test_x, test_y = load_data()
    labels = functools.partial(torch.as_tensor, dtype=torch.long)
    return preprocess(train_x), labels(train_y), preprocess(test_x), labels(test_y)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--save", metavar="FILE", help="write the trained state_dict to FILE")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    generator = seed_everything(args.seed)
    train_x, train_y, test_x, test_y = prepared_data()
    model = build_model().to(device)
    curve = train(model, train_x, train_y, args.epochs, generator, device)
    accuracy = test_accuracy(model, test_x, test_y, device)
    if args.save:
        torch.save(model.state_dict(), args.save)
    result = {"accuracy": accuracy, "epochs": args.epochs, "seed": args.seed, "loss": curve}
    if args.json:
        print(json.dumps(result))
    else:
        epochs = f"{args.epochs} epoch" + ("" if args.epochs == 1 else "s")
        print(f"test accuracy {accuracy:.4f} after {epochs} (seed {args.seed})")
    return result


if __name__ == "__main__":
    main()
''')

DIGITS_LOAD_DATA = '''
def load_data():
    """(train_x, train_y, test_x, test_y) as the task's source gives them; replace it for
    your own data. The default is the search's: scikit-learn's digits as (N, 1, 8, 8) floats
    0-16, a stratified quarter held out with random_state 0 (winnow's split)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit(
            "train.py's load_data() reads scikit-learn's digits: pip install scikit-learn, "
            "or replace load_data() with a function returning your own data"
        ) from None
    digits = load_digits()
    images = digits.images.astype("float32")[:, None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    return torch.from_numpy(train_x), train_y, torch.from_numpy(test_x), test_y
'''

NPZ_LOAD_DATA = Template('''
def load_data():
    """(train_x, train_y, test_x, test_y) as the task's source gives them; replace it for
    your own data. The default reads the search's file, arrays train_x, train_y, test_x and
    test_y as stored (e.g. uint8 N x C x H x W images), when it is at the same path here."""
    import os

    import numpy

    path = os.path.expanduser(${path})
    if not os.path.isfile(path):
        raise NotImplementedError(
            f"replace load_data() in train.py, or put the search's file at {path}: return "
            "(train_x, train_y, test_x, test_y) as that file stores them"
        )
    with numpy.load(path) as arrays:
        parts = [arrays[key] for key in ("train_x", "train_y", "test_x", "test_y")]
    return tuple(torch.as_tensor(part) for part in parts)
''')

OTHER_LOAD_DATA = Template('''
def load_data():
    """(train_x, train_y, test_x, test_y) as the task's source gives them: replace it.
    Inputs in the shape and type the search read (an npz file's arrays as stored, e.g. uint8
    N x C x H x W images), labels 0..classes-1."""
    raise NotImplementedError(
        "replace load_data() in train.py: this recipe was searched on " + ${dataset} + "; "
        "return (train_x, train_y, test_x, test_y) as that source gives them"
    )
''')


# --- README.md -----------------------------------------------------------------------------

PYTORCH_USAGE = """## Train it

    pip install -r requirements.txt
    python train.py            # the recipe's epochs and seed; --json for a JSON line

`load_data()` in `train.py` is the one function to replace for your own data. `--save
weights.pt` writes the trained `state_dict`.

## Use trained weights

When the search kept this trial's weights (the top `keep_weights` trials of its front), the
bundle has them as `weights.pt`; else `python train.py --save weights.pt` makes them.

    import torch
    from model import build_model, preprocess

    model = build_model()
    model.load_state_dict(torch.load("weights.pt"), strict=True)
    model.eval()
    logits = model(preprocess(x))  # x as the task's source gives it
"""


def _metric_rows(metrics: dict[str, Any]) -> str:
    return "\n".join(f"| {name} | {value} |" for name, value in sorted(metrics.items()))


def readme(recipe: dict[str, Any], usage: str) -> str:
    """What the recipe is and what it scored at which fidelity, then ``usage``."""
    training = recipe["training"]
    candidate = json.dumps(recipe["candidate"], indent=2, sort_keys=True)
    return f"""# {_summary(recipe)}

Search `{recipe.get("search_id")}`, trial {recipe.get("trial_id")}, exported by winnow
{recipe.get("winnow_version", "")}. `recipe.json` is the recipe as winnow reads it back
(`winnow evaluate --recipe recipe.json`); `model.py` and `train.py` need only PyTorch.

## What it scored

Trained on `{training["task"]["dataset"]}` for {epochs_text(training["epochs"])} (the trial's
highest trained rung) with seed {training["seed"]}:

| metric | value |
| --- | --- |
{_metric_rows(recipe.get("metrics") or {})}

## The recipe

```json
{candidate}
```

{usage}"""
