"""The example's dataset: ``task.dataset: "python:tabular_example.data:load"``.

winnow calls ``load()`` (once per worker process) and takes the four arrays it returns, as an
``npz:`` file holds them: float features and integer labels. The CSV is the file named by
``TABULAR_EXAMPLE_CSV``, else ``customers.csv`` beside this module, written by ``make_csv``
when it does not exist yet.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tabular_example.make_csv import write_csv

TEST_FRACTION = 0.25


def csv_path() -> Path:
    return Path(os.environ.get("TABULAR_EXAMPLE_CSV", Path(__file__).with_name("customers.csv")))


def load() -> dict[str, np.ndarray]:
    path = csv_path()
    if not path.exists():
        write_csv(path)
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    x, y = table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)
    # standardize by the training rows' statistics (the test rows must not inform them)
    split = round(len(y) * (1 - TEST_FRACTION))
    mean, std = x[:split].mean(axis=0), x[:split].std(axis=0) + 1e-6
    x = (x - mean) / std
    return {"train_x": x[:split], "train_y": y[:split], "test_x": x[split:], "test_y": y[split:]}
