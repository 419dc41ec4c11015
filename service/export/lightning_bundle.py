"""The ``lightning`` export format: the recipe as a Lightning ``LightningModule`` and a Trainer.

The bundle is the ``pytorch`` one (model.py, train.py, requirements, README, recipe.json) plus
``lightning_module.py`` (``RecipeModule``: the model of model.py; ``configure_optimizers`` with
the recipe's optimizer and its warmup and schedule, stepped per optimizer step as winnow
steps them; ``training_step``/``validation_step``) and ``fit.py`` (the Trainer config,
``TRAINER``, and ``python fit.py``). The module takes its optimizer, schedule, data and
augmentation from train.py, so the two trainings are one recipe. Training steps are written by
hand (Lightning's manual optimization) because Sophia's backward must build the graph on the
steps that refresh its Hessian estimate, which automatic optimization cannot be told.

Writing it needs ``lightning`` on the server (the ``export`` extra): requirements.txt asks for
the Lightning major version the module was written against and checked with.
"""

from __future__ import annotations

from typing import Any

from winnow.service.export import pytorch_bundle
from winnow.service.export.extras import require


def lightning_requirement() -> str:
    major = int(require("lightning", "lightning").__version__.split(".")[0])
    return f"lightning>={major}.0,<{major + 1}"


def files(
    recipe: dict[str, Any], model_source: pytorch_bundle.ModelSource | None = None
) -> dict[str, bytes]:
    requirement = lightning_requirement()  # first: a missing extra is said before anything else
    bundle = pytorch_bundle.files(recipe, model_source)
    bundle["requirements.txt"] = pytorch_bundle.requirements(recipe, (requirement,)).encode()
    bundle["README.md"] = pytorch_bundle.readme(recipe, LIGHTNING_USAGE).encode()
    bundle["lightning_module.py"] = LIGHTNING_MODULE.lstrip().encode()
    bundle["fit.py"] = FIT.lstrip().encode()
    return bundle


LIGHTNING_USAGE = """## Train it with Lightning

    pip install -r requirements.txt
    python fit.py              # the recipe's epochs and seed; --json for a JSON line

`lightning_module.py` holds `RecipeModule` (the model of `model.py`, the recipe's optimizer and
schedule) and `loaders()`; `fit.py` holds the Trainer config (`TRAINER`). The data is
`load_data()` of `train.py`, the one function to replace for your own data; `python train.py`
trains the same recipe without Lightning.
"""

LIGHTNING_MODULE = '''
"""The recipe as a LightningModule: the model of model.py, trained as train.py trains it."""

from __future__ import annotations

import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Sampler, TensorDataset

import train as recipe
from model import build_model

CREATE_GRAPH_WARNING = "Using backward\\\\(\\\\) with create_graph=True"


class RecipeModule(L.LightningModule):
    """``build_model()`` with the recipe's optimizer, warmup and schedule (one scheduler step
    per optimizer step), cross-entropy, and batches of two or more samples (batch statistics).
    Manual optimization: an optimizer that takes Hessian-vector products (Sophia) needs the
    backward to build the graph on the steps that refresh its estimate."""

    def __init__(self, steps_per_epoch: int, epochs: int, generator: torch.Generator):
        super().__init__()
        self.model = build_model()
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.generator = generator  # draws the augmentation, after the epoch's order
        self.automatic_optimization = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):
        optimizer = recipe.make_optimizer(self.model.parameters())
        scheduler = recipe.make_scheduler(optimizer, self.steps_per_epoch, self.epochs)
        schedule = {"scheduler": scheduler, "interval": "step"}  # per optimizer step
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def training_step(self, batch, batch_idx):
        x, y = batch
        if recipe.augments(x):
            x = recipe.crop_flip(x, self.generator)
        if len(y) < 2:  # batch statistics need two samples
            return None
        with recipe.autocast(self.device):
            loss = F.cross_entropy(self.model(x), y)
        self._step(loss)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _step(self, loss: torch.Tensor) -> None:
        """train.py's backward_and_step, through Lightning's optimizer and backward."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        graph = recipe._refreshes_hessian(optimizer.optimizer)
        with warnings.catch_warnings():
            # torch warns of the parameter <-> gradient cycle; _detach_grads breaks it below.
            warnings.filterwarnings("ignore", message=CREATE_GRAPH_WARNING)
            self.manual_backward(loss, create_graph=graph)
        try:
            optimizer.step()
        finally:
            if graph:
                recipe._detach_grads(optimizer.optimizer)
        self.lr_schedulers().step()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), prog_bar=True)


class EpochOrder(Sampler):
    """A permutation of the training set per epoch from the recipe's generator, drawn as
    train.py draws it (a shuffling DataLoader would first draw its workers' seed from it)."""

    def __init__(self, size: int, generator: torch.Generator):
        self.size, self.generator = size, generator

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=self.generator).tolist())


def loaders(generator: torch.Generator) -> tuple[DataLoader, DataLoader]:
    """The training batches in ``EpochOrder`` and the test batches in order."""
    train_x, train_y, test_x, test_y = recipe.prepared_data()
    order = BatchSampler(EpochOrder(len(train_y), generator), recipe.BATCH_SIZE, drop_last=False)
    # its own generator: the loader draws a seed for its workers, which must not move torch's
    # global one (dropout's) nor the recipe's
    train = DataLoader(
        TensorDataset(train_x, train_y), batch_sampler=order, generator=torch.Generator()
    )
    test = DataLoader(TensorDataset(test_x, test_y), batch_size=recipe.EVAL_BATCH)
    return train, test
'''

FIT = '''
"""Fit the recipe with Lightning: python fit.py [--epochs N] [--seed S] [--json]."""

from __future__ import annotations

import argparse
import json

import lightning as L

import train as recipe
from lightning_module import RecipeModule, loaders

# The Trainer config: the recipe's epochs; one device, no logger or checkpoints by default.
TRAINER = {
    "max_epochs": recipe.EPOCHS,
    "accelerator": "auto",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=recipe.EPOCHS)
    parser.add_argument("--seed", type=int, default=recipe.SEED)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    generator = recipe.seed_everything(args.seed)  # as train.py seeds: the same weights
    train, test = loaders(generator)
    module = RecipeModule(len(train), args.epochs, generator)
    trainer = L.Trainer(**{**TRAINER, "max_epochs": args.epochs})
    trainer.fit(module, train, test)
    result = {
        "accuracy": float(trainer.callback_metrics["val_accuracy"]),
        "epochs": args.epochs,
        "seed": args.seed,
    }
    print(json.dumps(result) if args.json else f"validation accuracy {result['accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
'''
