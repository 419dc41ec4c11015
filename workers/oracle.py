"""A tabular oracle for benchmarking search strategies on NAS-Bench-201.

For ``train`` trials it answers with the ground truth of a CSV (``arch,test_accuracy``, e.g.
``../shared/data/nb201_cifar10.csv``) instead of training: ``accuracy`` (0-1, the CSV's percent
/ 100) and ``params`` (counted by winnow on the built network, never read from a table). Every
other stage (``proxy`` above all) runs for real through ``inner``, so proxies are computed by
winnow's code on real images. The oracle has one fidelity (the benchmark's 200 epochs): the
``epochs`` of a trial do not change its answer, so searches benchmarked with it use one rung.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

from winnow.proxies.nb201_truth import read_nb201_truth
from winnow.search_space.archs.nb201 import format_arch, parse_arch
from winnow.search_space.costs import count_parameters
from winnow.search_space.trial import EpochCallback, Status, TrialResult, TrialSpec
from winnow.workers.executor import Executor, InProcessExecutor

CIFAR10_CLASSES = 10
CIFAR10_INPUT = (3, 32, 32)


class OracleError(ValueError):
    """A trial the oracle cannot answer (not an nb201 cell, or a cell the table lacks)."""


class NB201Oracle(Executor):
    """Answers ``train`` trials of nb201 candidates from a ground-truth table; see the module
    docstring. ``trained`` counts the answers (each is one trained trial of the benchmark)."""

    trains = False  # a table's answer: confirming a front with further seeds means nothing

    def __init__(self, truth_csv: str | Path, inner: Executor | None = None) -> None:
        self.accuracy = {c.arch: c.test_accuracy for c in read_nb201_truth(truth_csv)}
        self.inner = inner or InProcessExecutor()
        self.trained = 0
        self._params: dict[str, int] = {}

    def submit(self, spec: TrialSpec, on_epoch: EpochCallback | None = None) -> Future[TrialResult]:
        """A ``train`` trial is answered at once, without epochs (``on_epoch`` is not called)."""
        if spec.stage != "train":
            return self.inner.submit(spec, on_epoch)
        future: Future[TrialResult] = Future()
        try:
            future.set_result(self.answer(spec))
        except OracleError as error:
            future.set_exception(error)
        return future

    def answer(self, spec: TrialSpec) -> TrialResult:
        start = time.perf_counter()
        arch = spec.candidate.architecture
        if arch.get("family") != "nb201":
            raise OracleError(f"the NB201 oracle answers nb201 candidates, not {arch['family']!r}")
        cell = format_arch(parse_arch(arch["cell"]))
        if cell not in self.accuracy:
            raise OracleError(f"cell {cell} is not in the ground-truth table")
        self.trained += 1
        metrics = {"accuracy": self.accuracy[cell] / 100.0, "params": float(self._count(spec))}
        return TrialResult(Status.OK, metrics, seconds=time.perf_counter() - start, device="oracle")

    def _count(self, spec: TrialSpec) -> int:
        """Parameters of the network winnow builds for the candidate, memoised by its key."""
        key = spec.candidate.key
        if key not in self._params:
            model = spec.candidate.build_model(CIFAR10_CLASSES, CIFAR10_INPUT)
            self._params[key] = count_parameters(model)
        return self._params[key]

    def close(self) -> None:
        self.inner.close()
