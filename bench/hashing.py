"""``winnow bench hashing``: structural and functional hashing over a space, with class counts,
timings, their agreement and a mantissa-precision sweep.

- ``--space nb201`` (no ``--sample``): every one of the 15,625 NAS-Bench-201 cells, hashed both
  ways; ``--out`` writes ``arch,structural_hash,functional_hash``.
- ``--space nb201-joint --sample N``: N candidates drawn from a joint space (nb201 x
  normalization x optimizer x quantization, a built-in space); the duplicate fraction each hash
  finds.
"""

from __future__ import annotations

import csv
import itertools
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from winnow.search_space.archs.nb201 import EDGES, OPS, format_arch
from winnow.search_space.candidate import Candidate
from winnow.search_space.canonical import structural_hash
from winnow.search_space.functional_hash import (
    DEFAULT_MANTISSA_BITS,
    functional_signature,
    hash_signature,
)
from winnow.search_space.spec import SearchSpace, load_space


def all_nb201_candidates(space: SearchSpace) -> Iterator[Candidate]:
    """The space's first candidate with its cell set to each of the 15,625 cells in turn."""
    base = space.sample(1, seed=0)[0].model_dump()
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        arch = base["architecture"] | {"cell": format_arch(ops)}
        yield Candidate.model_validate(base | {"architecture": arch})


def _classes(hashes: list[str]) -> int:
    return len(set(hashes))


def partition_disagreements(structural: list[str], functional: list[str]) -> int:
    """Candidates whose structural class is not exactly their functional class: 0 when equal
    structural hashes coincide with equal functional hashes."""
    pairs = set(zip(structural, functional, strict=True))
    per_structural = Counter(s for s, _ in pairs)
    per_functional = Counter(f for _, f in pairs)
    return sum(
        1
        for s, f in zip(structural, functional, strict=True)
        if per_structural[s] > 1 or per_functional[f] > 1
    )


def run(
    space_name: str,
    sample: int | None,
    seed: int,
    mantissa_bits: list[int],
    out: Path | None,
    limit: int | None = None,
) -> dict[str, Any]:
    torch.set_num_threads(1)  # many small ops: one thread beats two contended ones
    space = load_space(space_name)
    if sample:
        candidates = space.sample(sample, seed=seed)
    else:
        if space.architecture.family != "nb201":
            raise ValueError("without --sample, hashing enumerates nb201 cells: use an nb201 space")
        candidates = list(itertools.islice(all_nb201_candidates(space), limit))
    start = time.perf_counter()
    structural = [structural_hash(c) for c in candidates]
    structural_seconds = time.perf_counter() - start

    signatures, start = [], time.perf_counter()
    for candidate in tqdm(
        candidates,
        desc="functional hashing",
        file=sys.stderr,
        mininterval=5,
        disable=len(candidates) < 200,
    ):
        signatures.append(functional_signature(candidate))
    functional_seconds = time.perf_counter() - start
    by_bits = {
        bits: [hash_signature(c, s, bits) for c, s in zip(candidates, signatures, strict=True)]
        for bits in sorted(set(mantissa_bits) | {DEFAULT_MANTISSA_BITS})
    }
    functional = by_bits[DEFAULT_MANTISSA_BITS]
    if out is not None:
        _write_csv(out, candidates, structural, functional)
    n = len(candidates)
    return {
        "space": space.name,
        "candidates": n,
        "structural_classes": _classes(structural),
        "functional_classes": _classes(functional),
        "structural_seconds": round(structural_seconds, 4),
        "functional_ms_per_candidate": round(1e3 * functional_seconds / n, 3),
        "duplicate_fraction_structural": round(1 - _classes(structural) / n, 4),
        "duplicate_fraction_functional": round(1 - _classes(functional) / n, 4),
        "partition_disagreements": partition_disagreements(structural, functional),
        "non_finite_probes": sum(s is None for s in signatures),
        "mantissa_bits": DEFAULT_MANTISSA_BITS,
        "functional_classes_by_mantissa_bits": {str(b): _classes(h) for b, h in by_bits.items()},
        "partition_disagreements_by_mantissa_bits": {
            str(b): partition_disagreements(structural, h) for b, h in by_bits.items()
        },
    }


def _write_csv(path: Path, candidates, structural, functional) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "structural_hash", "functional_hash"])
        for c, s, h in zip(candidates, structural, functional, strict=True):
            arch = c.architecture.get("cell") or c.canonical_json()
            writer.writerow([arch, s, h])
