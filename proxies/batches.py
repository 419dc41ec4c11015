"""The fixed batches of real training images that proxies score a network on.

Every network a search (or the proxy benchmark) compares is scored on the same batches, drawn
once with a seeded generator, so that the only difference between two scores is the network.
"""

from __future__ import annotations

import torch

from winnow.search_space.datasets import Dataset

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def fixed_batches(
    dataset: Dataset, n_batches: int, batch_size: int, seed: int, device: torch.device | str
) -> Batches:
    """``n_batches`` disjoint batches of real training images, drawn once with a seeded
    generator and normalised but not augmented, so that every cell is scored on the same data."""
    needed = n_batches * batch_size
    if needed > len(dataset.train_y):
        raise ValueError(
            f"{dataset.name} has {len(dataset.train_y)} training images; "
            f"{n_batches} batches of {batch_size} need {needed}"
        )
    order = torch.randperm(len(dataset.train_y), generator=torch.Generator().manual_seed(seed))
    chosen = order[:needed]
    x = dataset.normalize(dataset.train_x[chosen]).to(device)
    y = dataset.train_y[chosen].to(device)
    return [
        (x[k * batch_size : (k + 1) * batch_size], y[k * batch_size : (k + 1) * batch_size])
        for k in range(n_batches)
    ]
