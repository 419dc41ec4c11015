"""Write the example's CSV: customers described by ten numeric columns, each in one of three
plans. The plan is a nonlinear function of six columns (a small random tanh network) with
noise; four columns are noise alone, so a network must learn which columns count.

    python -m tabular_example.make_csv customers.csv
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

COLUMNS = [f"x{k}" for k in range(10)]
CLASSES = 3


def write_csv(path: Path, rows: int = 1500, seed: int = 0) -> Path:
    """Write ``rows`` seeded rows (header ``x0..x9,plan``) to ``path``; returns it. The file
    appears whole or not at all: several worker processes may call ``data.load()`` on a
    fresh clone at once, and one must never read another's half-written CSV."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(COLUMNS)))
    hidden = np.tanh(x[:, :6] @ rng.normal(size=(6, 16)))
    logits = hidden @ rng.normal(size=(16, CLASSES)) + 0.5 * rng.normal(size=(rows, CLASSES))
    plan = logits.argmax(axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = np.column_stack([x.round(4), plan])
    formats = ["%.4f"] * len(COLUMNS) + ["%d"]
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            header = ",".join([*COLUMNS, "plan"])
            np.savetxt(file, table, delimiter=",", header=header, comments="", fmt=formats)
        os.replace(temporary, path)  # atomic in one folder: readers see the old or the new file
    except BaseException:
        os.unlink(temporary)
        raise
    return path


if __name__ == "__main__":
    print(write_csv(Path(sys.argv[1] if len(sys.argv) > 1 else "customers.csv")))
