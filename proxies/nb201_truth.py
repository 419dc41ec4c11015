"""NAS-Bench-201 ground truth (Dong & Yang, ICLR 2020) for evaluating proxies, never as their input.

The file is a CSV with a header and the columns ``arch`` (an NB201 arch string) and
``test_accuracy`` (CIFAR-10 test accuracy in %, e.g. 93.66); an ``index`` column (the
benchmark's index) is kept when present. Arch strings go through
:func:`~winnow.search_space.archs.nb201.parse_arch` and ``format_arch``, so a malformed one fails
here, with its line number, rather than when a network is built from it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow.search_space.archs.nb201 import ArchStringError, format_arch, parse_arch

REQUIRED_COLUMNS = ("arch", "test_accuracy")


class GroundTruthError(ValueError):
    """A ground-truth file that is missing or malformed; the message names the line and field."""


@dataclass(frozen=True)
class NB201Cell:
    """One benchmark cell: its arch string (canonical form), accuracy in %, benchmark index."""

    arch: str
    test_accuracy: float
    index: int


def read_nb201_truth(path: str | Path) -> list[NB201Cell]:
    """Every cell of a ground-truth CSV, in file order."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise GroundTruthError(
            f"no NAS-Bench-201 ground-truth file {file} (a CSV with columns "
            f"{', '.join(REQUIRED_COLUMNS)}, e.g. ../shared/data/nb201_cifar10.csv)"
        )
    with open(file, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GroundTruthError(
                f"{file}: the header lacks column(s) {', '.join(missing)} "
                f"(found: {', '.join(reader.fieldnames or []) or 'no header'})"
            )
        cells = [_parse_row(row, file, reader.line_num) for row in reader]
    if not cells:
        raise GroundTruthError(f"{file}: no rows after the header")
    _check_unique(cells, file)
    return cells


def _parse_row(row: dict[str, str | None], file: Path, line: int) -> NB201Cell:
    where = f"{file}, line {line}"
    try:
        arch = format_arch(parse_arch(row["arch"] or ""))
    except ArchStringError as error:
        raise GroundTruthError(f"{where}: bad arch: {error}") from None
    text = row["test_accuracy"]
    try:
        accuracy = float(text or "")
    except ValueError:
        raise GroundTruthError(f"{where}: test_accuracy {text!r} is not a number") from None
    if not math.isfinite(accuracy) or not 0.0 <= accuracy <= 100.0:
        raise GroundTruthError(f"{where}: test_accuracy {accuracy} is not a percentage in [0, 100]")
    index_text = row.get("index")
    try:
        index = int(index_text) if index_text not in (None, "") else line - 2
    except ValueError:
        raise GroundTruthError(f"{where}: index {index_text!r} is not an integer") from None
    return NB201Cell(arch, accuracy, index)


def _check_unique(cells: Sequence[NB201Cell], file: Path) -> None:
    seen: set[str] = set()
    for cell in cells:
        if cell.arch in seen:
            raise GroundTruthError(f"{file}: arch {cell.arch} appears more than once")
        seen.add(cell.arch)


def sample_cells(cells: Sequence[NB201Cell], n: int, seed: int = 0) -> list[NB201Cell]:
    """``n`` distinct cells drawn uniformly with ``seed``.

    The draw is the first ``n`` of one seeded permutation, so a smaller sample is a prefix of a
    larger one with the same seed: a 20-cell smoke run scores the first cells of the 1,000-cell
    run, and both can share one score cache.
    """
    if not 1 <= n <= len(cells):
        raise GroundTruthError(f"--sample must be between 1 and {len(cells)} cells, not {n}")
    order = np.random.default_rng(seed).permutation(len(cells))[:n]
    return [cells[i] for i in order]
