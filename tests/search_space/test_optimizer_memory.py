"""Memory with the Hessian optimizer: the graph a backward pass builds for Sophia's Hessian
estimate is freed after the step, and the model with it."""

from __future__ import annotations

import gc
import weakref

import torch

from winnow.search_space.optimizers import backward_and_step, build_optimizer


def live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance probes deprecated torch module attributes and warns.
    return sum(issubclass(type(obj), torch.Tensor) for obj in gc.get_objects())


def test_hessian_steps_leave_no_graph_and_free_the_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    optimizer = build_optimizer("sophia", model.parameters(), {})
    counts = []
    for step in range(51):  # refreshes on steps 0, 10, ..., 50 (every 10th)
        backward_and_step(optimizer, torch.nn.functional.mse_loss(model(x), y))
        assert all(p.grad.grad_fn is None and not p.grad.requires_grad for p in model.parameters())
        if step % 10 == 0:  # counting walks the whole heap: only after refresh steps
            counts.append(live_tensors())
    assert len(set(counts)) == 1, counts
    # A gradient holding its graph would reference its parameter from C++: a cycle gc cannot
    # free, and the model would outlive its last Python reference.
    param = weakref.ref(model[0].weight)
    del model, optimizer
    gc.collect()
    assert param() is None
