"""Fused optimizer steps: AdamW, Lion and SGD updating a param group in one launch.

``FusedAdamW``, ``FusedLion`` and ``FusedSGD`` take the eager optimizers' constructor
hyperparameters and keep their ``state_dict()`` layout (``torch.optim.AdamW``: a per-parameter
float32 ``step`` tensor, ``exp_avg``, ``exp_avg_sq``; pytorch_optimizer's ``Lion``: ``exp_avg``
and the group's ``step``; ``torch.optim.SGD``: ``momentum_buffer``), with the eager class's own
group defaults, so ``eager.load_state_dict(fused.state_dict())`` and the reverse continue the
same trajectory. Per parameter group and (dtype, device), the parameters that have a gradient
are updated by one Triton launch (``optim_triton.py``) when ``backend.use_triton`` chooses the
kernel, and otherwise by the same update in torch ops on the same flat buffers.

How the buffers are flat (the design choice):

- The optimizer state lives in flat buffers owned by the optimizer; ``state[p]["exp_avg"]`` is
  a view into one (as apex's and DeepSpeed's flat buffers are). A layout is cached per set of
  parameters stepped together and rebuilt, by copying, whenever a state tensor is not the view
  it made: after ``load_state_dict`` (which puts new tensors in ``state``), or when the set of
  parameters with a gradient changes; then the parameters the new layout leaves out get their
  state copied out of the old buffers (their own storage), so that the old buffers are freed.
- Parameters and gradients are gathered into flat buffers each step and the parameters copied
  back (``torch._foreach_copy_``: a launch or two each on CUDA). The parameters stay the model's
  own tensors: binding them as views of one buffer, as apex's contiguous-parameter mode does,
  would be silently undone by anything that rebinds ``.data`` (``module.to``,
  ``load_state_dict(assign=True)``, the supernet's weight copies, ``parametrize``
  re-registering a fake-quantized weight's ``original``). The price is one more read and write
  of the parameters and gradients per step and two parameter-sized buffers kept per layout;
  the launch count (what bounds small models) stays constant.

Parameters without a gradient are left alone, their state untouched, as the eager ones do.
AdamW's bias correction depends on each parameter's own ``step``: parameters whose counts
differ (one skipped steps without a gradient) are stepped in one launch per count. The kernel
runs float32 buffers; other dtypes take the torch update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_optimizer import Lion
from torch import Tensor

from winnow.kernels import backend

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


@dataclass
class _Layout:
    """Flat buffers for one set of parameters stepped together, and their views."""

    params: list[Tensor]
    param_flat: Tensor
    param_views: list[Tensor]
    grad_flat: Tensor
    grad_views: list[Tensor]
    states: dict[str, Tensor]  # state key -> flat buffer; state[p][key] is a view into it
    state_views: dict[str, list[Tensor]]


def _views(flat: Tensor, params: list[Tensor]) -> list[Tensor]:
    views, offset = [], 0
    for p in params:
        views.append(flat[offset : offset + p.numel()].view(p.shape))
        offset += p.numel()
    return views


def _eager_defaults(eager: type[torch.optim.Optimizer], hyperparameters: dict) -> dict:
    """The eager optimizer's group defaults for these hyperparameters (its own validation and
    every key it sets, so a state_dict's groups read the same to either class)."""
    return dict(eager([torch.zeros(1)], **hyperparameters).defaults)


class _FusedOptimizer(torch.optim.Optimizer):
    """The shared machinery: flat layouts, gathering, the kernel-or-fallback choice.

    A subclass names its ``state_keys``, checks a group (``_check``) and updates one flat set
    (``_update``); ``_prepare`` and ``_split`` let AdamW keep its per-parameter step.
    """

    state_keys: tuple[str, ...] = ()

    def __init__(self, params: Params, defaults: dict) -> None:
        super().__init__(params, defaults)
        self._layouts: dict[tuple[int, ...], _Layout] = {}

    @classmethod
    def from_eager(cls, eager: torch.optim.Optimizer) -> _FusedOptimizer:
        """This class over ``eager``'s param groups and defaults (every key the eager class
        set, so the two read one ``state_dict``); ``eager`` must not have stepped yet."""
        if eager.state:
            raise ValueError(f"{cls.__name__}.from_eager takes an optimizer that has not stepped")
        fused = cls.__new__(cls)
        _FusedOptimizer.__init__(fused, [dict(g) for g in eager.param_groups], eager.defaults)
        return fused

    # --- subclass hooks ---------------------------------------------------------------------

    def _check(self, group: dict) -> None:
        """Raise ValueError for an option the fused update does not implement."""

    def _keys(self, group: dict) -> tuple[str, ...]:
        return self.state_keys

    def _prepare(self, group: dict, params: list[Tensor]) -> None:
        """Per-parameter bookkeeping before the update (AdamW's step counts)."""

    def _split(self, params: list[Tensor]) -> Iterator[list[Tensor]]:
        yield params

    def _update(self, group: dict, layout: _Layout, kernel: bool) -> None:
        raise NotImplementedError

    # --- the step ---------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._check(group)
            self._begin(group)
            for bucket in _buckets(group["params"]):
                self._prepare(group, bucket)
                for params in self._split(bucket):
                    layout = self._layout(params, self._keys(group))
                    torch._foreach_copy_(layout.grad_views, [p.grad for p in params])
                    torch._foreach_copy_(layout.param_views, params)
                    kernel = layout.param_flat.dtype == torch.float32 and backend.use_triton(
                        layout.param_flat.device
                    )
                    self._update(group, layout, kernel)
                    torch._foreach_copy_(params, layout.param_views)
        return loss

    def _begin(self, group: dict) -> None:
        """Group-level bookkeeping once per step (Lion counts its steps in the group)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._layouts.clear()  # the state tensors are new: the next step lays them out afresh

    # --- layouts ----------------------------------------------------------------------------

    def _layout(self, params: list[Tensor], keys: tuple[str, ...]) -> _Layout:
        ids = tuple(id(p) for p in params)
        layout = self._layouts.get(ids)
        if layout is not None and self._intact(layout, keys):
            return layout
        layout = self._build(params, keys)
        for other in [k for k in self._layouts if set(k) & set(ids)]:
            # its views of these parameters were just replaced; the others' state moves out
            self._release(self._layouts.pop(other), set(ids))
        self._layouts[ids] = layout
        return layout

    def _release(self, layout: _Layout, kept: set[int]) -> None:
        """Give the parameters of a dropped ``layout`` that are not in ``kept`` (ids) state
        tensors of their own, so that nothing views its flat buffers: they are freed, and a
        checkpoint does not write a whole old buffer for each such view."""
        for key, views in layout.state_views.items():
            for p, view in zip(layout.params, views, strict=True):
                if id(p) not in kept and self.state[p].get(key) is view:
                    self.state[p][key] = view.clone()

    def _intact(self, layout: _Layout, keys: tuple[str, ...]) -> bool:
        if set(layout.states) != set(keys):
            return False
        return all(
            self.state[p].get(key) is view
            for key in keys
            for p, view in zip(layout.params, layout.state_views[key], strict=True)
        )

    def _build(self, params: list[Tensor], keys: tuple[str, ...]) -> _Layout:
        """Flat buffers for ``params``: each state copied in from what ``state`` holds (zeros
        for a parameter's first step), then ``state`` pointed at views into them."""
        total = sum(p.numel() for p in params)
        like = params[0]
        param_flat, grad_flat = like.new_empty(total), like.new_empty(total)
        states, state_views = {}, {}
        for key in keys:
            flat = like.new_zeros(total)
            views = _views(flat, params)
            for p, view in zip(params, views, strict=True):
                old = self.state[p].get(key)
                if old is not None:
                    view.copy_(old)
                self.state[p][key] = view
            states[key], state_views[key] = flat, views
        return _Layout(
            params=list(params),
            param_flat=param_flat,
            param_views=_views(param_flat, params),
            grad_flat=grad_flat,
            grad_views=_views(grad_flat, params),
            states=states,
            state_views=state_views,
        )


def _buckets(params: list[Tensor]) -> Iterator[list[Tensor]]:
    """The parameters with a gradient, per (dtype, device), in the group's order."""
    buckets: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse or torch.is_complex(p):
            raise ValueError("the fused optimizers take dense, real parameters")
        buckets.setdefault((p.dtype, p.device), []).append(p)
    yield from buckets.values()


def _require(group: dict, name: str, **neutral: Any) -> None:
    for key, value in neutral.items():
        if group.get(key, value) != value:
            raise ValueError(f"{name}: {key}={group[key]!r} is not supported (only {value!r})")


def _scalar_dtype() -> torch.dtype:
    # torch.optim's step tensors: float32 unless the default dtype is float64
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class FusedAdamW(_FusedOptimizer):
    """``torch.optim.AdamW`` (decoupled weight decay), one launch per group and device."""

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        hyperparameters = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, _eager_defaults(torch.optim.AdamW, hyperparameters))

    def _check(self, group: dict) -> None:
        _require(
            group,
            "FusedAdamW",
            amsgrad=False,
            maximize=False,
            capturable=False,
            differentiable=False,
            decoupled_weight_decay=True,
        )

    def _prepare(self, group: dict, params: list[Tensor]) -> None:
        for p in params:
            if "step" not in self.state[p]:
                self.state[p]["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
        torch._foreach_add_([self.state[p]["step"] for p in params], 1)

    def _split(self, params: list[Tensor]) -> Iterator[list[Tensor]]:
        by_step: dict[float, list[Tensor]] = {}
        for p in params:
            by_step.setdefault(float(self.state[p]["step"]), []).append(p)
        yield from by_step.values()

    def _update(self, group: dict, layout: _Layout, kernel: bool) -> None:
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        # as torch's _single_tensor_adam computes them, in double
        step = float(self.state[layout.params[0]]["step"])
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        decay = 1 - lr * weight_decay
        param, grad = layout.param_flat, layout.grad_flat
        exp_avg, exp_avg_sq = layout.states["exp_avg"], layout.states["exp_avg_sq"]
        if kernel:
            from winnow.kernels import optim_triton

            optim_triton.adamw_step(
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                decay=decay,
                beta1=beta1,
                beta2=beta2,
                bias_correction2_sqrt=bias_correction2_sqrt,
                eps=eps,
                step_size=step_size,
            )
            return
        if weight_decay != 0:
            param.mul_(decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


class FusedLion(_FusedOptimizer):
    """pytorch_optimizer's ``Lion`` with decoupled weight decay (Chen et al. 2023, Program 1):
    ``theta *= 1 - lr*wd`` (``1 - wd`` with ``fixed_decay``), ``theta -= lr * sign(b1*m +
    (1-b1)*g)``, ``m = b2*m + (1-b2)*g``."""

    state_keys = ("exp_avg",)

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
    ) -> None:
        hyperparameters = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "weight_decouple": weight_decouple,
            "fixed_decay": fixed_decay,
        }
        super().__init__(params, _eager_defaults(Lion, hyperparameters))

    def _check(self, group: dict) -> None:
        _require(
            group, "FusedLion", weight_decouple=True, use_gc=False, adanorm=False, cautious=False
        )

    def _begin(self, group: dict) -> None:
        group["step"] = group.get("step", 0) + 1

    def _update(self, group: dict, layout: _Layout, kernel: bool) -> None:
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        decay = 1.0 - weight_decay * (1.0 if group["fixed_decay"] else lr)
        param, grad, exp_avg = layout.param_flat, layout.grad_flat, layout.states["exp_avg"]
        if kernel:
            from winnow.kernels import optim_triton

            optim_triton.lion_step(
                param, grad, exp_avg, decay=decay, beta1=beta1, beta2=beta2, lr=lr
            )
            return
        if weight_decay != 0.0:
            param.mul_(decay)
        update = exp_avg.lerp(grad, weight=1.0 - beta1).sign_()
        exp_avg.lerp_(grad, weight=1.0 - beta2)
        param.add_(update, alpha=-lr)


class FusedSGD(_FusedOptimizer):
    """``torch.optim.SGD`` with (Nesterov) momentum, L2 weight decay and dampening 0."""

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        hyperparameters = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, _eager_defaults(torch.optim.SGD, hyperparameters))

    def _check(self, group: dict) -> None:
        _require(group, "FusedSGD", dampening=0, maximize=False, differentiable=False)

    def _keys(self, group: dict) -> tuple[str, ...]:
        # torch keeps no state without momentum
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _update(self, group: dict, layout: _Layout, kernel: bool) -> None:
        lr, weight_decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
        nesterov = group["nesterov"]
        param, grad = layout.param_flat, layout.grad_flat
        buffer = layout.states.get("momentum_buffer")
        if kernel:
            from winnow.kernels import optim_triton

            optim_triton.sgd_step(
                param,
                grad,
                buffer,
                lr=lr,
                weight_decay=weight_decay,
                momentum=momentum,
                nesterov=nesterov,
            )
            return
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if buffer is not None:
            # torch starts a buffer as a copy of the gradient; a new one here is zeros, and
            # 0 * momentum + grad is that copy exactly
            buffer.mul_(momentum).add_(grad)
            grad = grad.add(buffer, alpha=momentum) if nesterov else buffer
        param.add_(grad, alpha=-lr)
