"""LAMB (You et al. 2020), written here: see :class:`Lamb` for why not pytorch_optimizer's."""

from __future__ import annotations

from collections.abc import Callable

import torch


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2).

    Per parameter tensor x: ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``, bias-corrected
    ``m^ = m/(1-b1^t)``, ``v^ = v/(1-b2^t)``, ``r = m^/(sqrt(v^) + eps)``,
    ``x -= lr * phi(||x||) / ||r + wd*x|| * (r + wd*x)`` with the scaling function phi the
    identity; the trust ratio is 1 when either norm is 0 (as in TensorFlow Addons' LAMB).

    Written by hand because pytorch_optimizer's Lamb follows the paper's version 3 (second
    moment not bias-corrected, ``||x||`` clamped at 10, eps in the trust-ratio denominator).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        eps: float = 1e-6,
    ) -> None:
        if lr < 0 or weight_decay < 0 or eps < 0:
            raise ValueError(
                f"lamb: lr, weight_decay, eps must be >= 0: {lr}, {weight_decay}, {eps}"
            )
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"lamb: betas must lie in [0, 1): {betas}")
        super().__init__(
            params, {"lr": lr, "betas": betas, "weight_decay": weight_decay, "eps": eps}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise RuntimeError("lamb does not support sparse gradients")
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(p.grad, 1.0 - beta1)
        v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
        denom = (v / (1.0 - beta2**t)).sqrt_().add_(group["eps"])
        update = (m / (1.0 - beta1**t)).div_(denom).add_(p, alpha=group["weight_decay"])
        weight_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
        # torch.where keeps the ratio on the device (no host sync per tensor).
        trust_ratio = torch.where(
            (weight_norm > 0) & (update_norm > 0), weight_norm / update_norm, 1.0
        )
        p.add_(update.mul_(trust_ratio), alpha=-group["lr"])
