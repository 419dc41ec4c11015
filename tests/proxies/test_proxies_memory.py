"""Scoring thousands of models in one process keeps memory flat: no hook, graph, copy or cache
outlives a ``score_model`` call."""

from __future__ import annotations

import gc
import warnings

import torch

from winnow.proxies import score_model
from winnow.search_space.archs.nb201 import OPS, NB201Network

PAGE_BYTES = 4096


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def score_many(n: int, batches, first: int) -> None:
    for i in range(first, first + n):
        ops = tuple(OPS[(i + e) % len(OPS)] for e in range(6))  # a different cell each time
        model = NB201Network(ops, 3, channels=2, cells_per_stage=1)
        scores = score_model(model, batches)
        assert scores["synflow"].value is not None


def test_memory_stays_flat_over_many_models():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models; see test_proxies.one_thread
    try:
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(4, 3, 4, 4, generator=g), torch.randint(0, 3, (4,))) for _ in "ab"]
        score_many(20, batches, first=0)  # warm-up: lazy imports, allocator pools
        tensors, rss = live_tensors(), resident_bytes()
        score_many(100, batches, first=20)
        assert live_tensors() <= tensors
        assert resident_bytes() - rss < 32 * 2**20
    finally:
        torch.set_num_threads(threads)
