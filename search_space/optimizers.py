"""The optimizer axis of a training recipe: one registry entry per optimizer, plus the LR schedule.

Each entry builds its optimizer from a flat dict of searchable hyperparameters (``lr``,
``weight_decay``, ``momentum``, ``nesterov``, ``beta1``, ``beta2``, ``rho``) and follows the update
rule its paper publishes. ``eps`` is fixed at each paper's default and is not searched.

SGD, Adam and AdamW come from ``torch.optim``. Lion, AdaBelief, AdamP, Sophia-H and diffGrad
come from ``pytorch_optimizer`` (v4), with its flags set so that the update is the paper's; the
comment at each factory says which flags and why. LAMB is written here: the library's ``Lamb``
follows the paper's version 3 (no bias correction of the second moment, trust ratio with an eps
and a clamp of the weight norm at 10), which no flag turns into Algorithm 2 of the paper.

Weight decay convention: every decoupled decay here shrinks the weights by ``lr * weight_decay``
per step (torch.optim.AdamW's convention); AdamW's paper writes the same term as
``eta_t * lambda`` with ``eta_t`` the schedule multiplier, i.e. ``lambda = lr * weight_decay``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from pytorch_optimizer import AdaBelief, AdamP, DiffGrad, Lion, SophiaH

from winnow.kernels import backend
from winnow.kernels.fused_optimizers import FusedAdamW, FusedLion, FusedSGD
from winnow.search_space.lamb import Lamb
from winnow.search_space.registry import Registry

Hyperparameters = dict[str, float | bool]
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], Hyperparameters], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer.

    ``factory(params, hyperparameters)`` builds it from a complete hyperparameter dict;
    ``defaults`` lists every hyperparameter it takes with its default value; ``needs_hessian``:
    backward must build the graph (``create_graph=True``) so the optimizer can take Hessian-vector
    products (``build_optimizer`` marks the optimizer, and ``backward_and_step`` builds the graph
    on the steps that refresh its estimate); ``reference``: the paper whose update rule it
    follows; ``fused``: the ``winnow.kernels.fused_optimizers`` class with the same update,
    which ``build_optimizer`` swaps in where the kernels run (``backend.use_triton``: CUDA by
    default), so on CPU winnow trains with the eager optimizer exactly as before. The factories
    stay torch-only: the pytorch export copies their source into its ``train.py``.
    """

    name: str
    factory: OptimizerFactory
    defaults: Hyperparameters
    needs_hessian: bool = False
    reference: str = ""
    fused: type | None = None


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer")


def _betas(hp: Hyperparameters) -> tuple[float, float]:
    return float(hp["beta1"]), float(hp["beta2"])


# --- torch.optim --------------------------------------------------------------------------------


def _sgd(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum and L2 weight decay added to the gradient.

    Nesterov momentum in the form of Sutskever et al. (2013) as rewritten by Bengio et al. (2013):
    ``b = mu * b + g``, step along ``g + mu * b`` (torch.optim.SGD with dampening 0).
    """
    momentum = float(hp["momentum"])
    return torch.optim.SGD(
        params,
        lr=float(hp["lr"]),
        momentum=momentum,
        # Nesterov's look-ahead is a no-op without momentum (torch refuses the combination).
        nesterov=bool(hp["nesterov"]) and momentum > 0,
        weight_decay=float(hp["weight_decay"]),
    )


def _adam(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015, Algorithm 1), weight decay as an L2 term added to the gradient."""
    return torch.optim.Adam(
        params,
        lr=float(hp["lr"]),
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]),
        eps=1e-8,
    )


def _adamw(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019, Algorithm 2): Adam with decoupled weight decay."""
    return torch.optim.AdamW(
        params,
        lr=float(hp["lr"]),
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]),
        eps=1e-8,
    )


# --- pytorch_optimizer, configured to the papers ------------------------------------------------


def _lion(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """Lion (Chen et al. 2023, Program 1): ``theta -= lr * (sign(b1*m + (1-b1)*g) + wd * theta)``,
    then ``m = b2*m + (1-b2)*g``. Decay is decoupled and scaled by lr (``fixed_decay=False``)."""
    return Lion(
        params,
        lr=float(hp["lr"]),
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]),
        weight_decouple=True,
        fixed_decay=False,
    )


def _adabelief(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdaBelief (Zhuang et al. 2020, Algorithm 2): Adam whose second moment is the EMA of
    ``(g - m)^2 + eps``. ``rectify=False``: the paper's rule (the authors' package turns on a
    RAdam-style rectification by default, which the paper's algorithm does not have). Decoupled
    decay as in the authors' package (``weight_decouple=True``); eps 1e-16 as the authors use."""
    return AdaBelief(
        params,
        lr=float(hp["lr"]),
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]),
        weight_decouple=True,
        fixed_decay=False,
        rectify=False,
        ams_bound=False,
        eps=1e-16,
    )


def _adamp(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdamP (Heo et al. 2021, Algorithm 2): Adam whose update loses its radial component on
    scale-invariant weights (|cos(w, g)| < delta / sqrt(dim), delta = 0.1), where weight decay is
    multiplied by wd_ratio = 0.1. Only tensors of 2+ dims are tested, per channel then per layer,
    as in the authors' code; decay decoupled as there."""
    return AdamP(
        params,
        lr=float(hp["lr"]),
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]),
        weight_decouple=True,
        fixed_decay=False,
        delta=0.1,
        wd_ratio=0.1,
        nesterov=False,
        eps=1e-8,
    )


def _diffgrad(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """diffGrad (Dubey et al. 2019): Adam with the first moment scaled per coordinate by the
    friction ``sigmoid(|g_{t-1} - g_t|)``, ``g_0 = 0``. The paper has no weight decay; the
    authors' code adds it to the gradient (L2), so ``weight_decouple=False``."""
    return DiffGrad(
        params,
        lr=float(hp["lr"]),
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]),
        weight_decouple=False,
        fixed_decay=False,
        rectify=False,
        ams_bound=False,
        eps=1e-8,
    )


SOPHIA_EPS = 1e-12
SOPHIA_HESSIAN_PERIOD = 10  # k: the Hessian estimate is refreshed every k steps (paper: 10)


def _sophia(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    """Sophia-H (Liu et al. 2023, ICLR 2024 version, Algorithm 3), Hutchinson estimator.

    ``h = b2*h + (1-b2) * u*(Hu)`` every k steps (u ~ N(0, I)), ``m = b1*m + (1-b1)*g``,
    ``theta -= lr*wd*theta``, ``theta -= lr * clip(m / max(rho*h, eps), 1)``.

    pytorch_optimizer's SophiaH implements the paper's first version,
    ``theta -= lr' * clip(m / max(h, eps'), p)``. The two are the same rule under
    ``lr' = lr/rho, p = rho, eps' = eps/rho`` (and decay ``lr'*wd' = lr*wd``), which is what is
    passed here, so ``lr`` is the paper's largest per-coordinate step. Consequence: the
    optimizer's ``param_groups[i]["lr"]`` holds ``lr/rho``; LR schedules scale it correctly.
    The library takes the Hessian-vector products through ``p.grad``, so the backward before a
    refresh needs ``create_graph=True`` (``backward_and_step`` does it).
    """
    rho = float(hp["rho"])
    if rho <= 0:
        raise ValueError(f"sophia: rho must be > 0, got {rho}")
    return SophiaH(
        params,
        lr=float(hp["lr"]) / rho,
        betas=_betas(hp),
        weight_decay=float(hp["weight_decay"]) * rho,
        weight_decouple=True,
        fixed_decay=False,
        p=rho,
        eps=SOPHIA_EPS / rho,
        update_period=SOPHIA_HESSIAN_PERIOD,
        num_samples=1,
        hessian_distribution="gaussian",
    )


def _lamb(params, hp: Hyperparameters) -> torch.optim.Optimizer:
    return Lamb(
        params, lr=float(hp["lr"]), betas=_betas(hp), weight_decay=float(hp["weight_decay"])
    )


# --- registry -----------------------------------------------------------------------------------


def _register(entry: OptimizerEntry) -> None:
    OPTIMIZERS.register(entry.name, entry)


_ADAM_BETAS: Hyperparameters = {"beta1": 0.9, "beta2": 0.999}

_register(
    OptimizerEntry(
        "sgd",
        _sgd,
        {"lr": 0.1, "weight_decay": 5e-4, "momentum": 0.9, "nesterov": True},
        reference="Sutskever et al. 2013, On the importance of initialization and momentum in DL",
        fused=FusedSGD,
    )
)
_register(
    OptimizerEntry(
        "adam",
        _adam,
        {"lr": 1e-3, "weight_decay": 0.0, **_ADAM_BETAS},
        reference="Kingma & Ba 2015, Adam: A Method for Stochastic Optimization",
    )
)
_register(
    OptimizerEntry(
        "adamw",
        _adamw,
        {"lr": 1e-3, "weight_decay": 1e-2, **_ADAM_BETAS},
        reference="Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization",
        fused=FusedAdamW,
    )
)
# Lion: lr 3-10x smaller than AdamW's and decay 3-10x larger, so that lr * wd (the decay
# strength) matches AdamW's 1e-3 * 1e-2 (Chen et al. 2023, section on hyperparameters).
_register(
    OptimizerEntry(
        "lion",
        _lion,
        {"lr": 1e-4, "weight_decay": 1e-1, "beta1": 0.9, "beta2": 0.99},
        reference="Chen et al. 2023, Symbolic Discovery of Optimization Algorithms",
        fused=FusedLion,
    )
)
_register(
    OptimizerEntry(
        "adabelief",
        _adabelief,
        {"lr": 1e-3, "weight_decay": 1e-2, **_ADAM_BETAS},
        reference="Zhuang et al. 2020, AdaBelief Optimizer: Adapting Stepsizes by the Belief",
    )
)
_register(
    OptimizerEntry(
        "adamp",
        _adamp,
        {"lr": 1e-3, "weight_decay": 1e-2, **_ADAM_BETAS},
        reference="Heo et al. 2021, AdamP: Slowing Down the Slowdown for Momentum Optimizers",
    )
)
_register(
    OptimizerEntry(
        "lamb",
        _lamb,
        {"lr": 1e-3, "weight_decay": 1e-2, **_ADAM_BETAS},
        reference="You et al. 2020, Large Batch Optimization for Deep Learning (Algorithm 2)",
    )
)
# Sophia-H: the paper's settings b1 0.96, b2 0.99, k 10 and rho 0.01 (its Sophia-H value); lr
# 6e-4 is pytorch_optimizer's default (6e-2 at p = 0.01) in these units; decay 0.1 as the
# authors' code. Backward must build the graph before each Hessian refresh: backward_and_step.
_register(
    OptimizerEntry(
        "sophia",
        _sophia,
        {"lr": 6e-4, "weight_decay": 1e-1, "beta1": 0.96, "beta2": 0.99, "rho": 0.01},
        needs_hessian=True,
        reference="Liu et al. 2023, Sophia: A Scalable Stochastic Second-order Optimizer",
    )
)
_register(
    OptimizerEntry(
        "diffgrad",
        _diffgrad,
        {"lr": 1e-3, "weight_decay": 0.0, **_ADAM_BETAS},
        reference="Dubey et al. 2019, diffGrad: An Optimization Method for CNNs",
    )
)

# Union of all entries' hyperparameter names, in first-seen registration order.
HYPERPARAMETERS: tuple[str, ...] = tuple(
    dict.fromkeys(name for key in OPTIMIZERS for name in OPTIMIZERS.get(key).defaults)
)


def build_optimizer(
    name: str, params, hyperparameters: Mapping[str, float | bool]
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params``; missing hyperparameters take the defaults.

    Raises ``UnknownNameError`` (a KeyError) for an unknown optimizer and ``ValueError`` for a
    hyperparameter the optimizer does not take, naming the allowed values.
    """
    entry = OPTIMIZERS.get(name)
    unknown = sorted(set(hyperparameters) - set(entry.defaults))
    if unknown:
        raise ValueError(
            f"optimizer {name!r} takes no hyperparameter {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(entry.defaults)}"
        )
    optimizer = _fused_where_kernels_run(
        entry, entry.factory(params, {**entry.defaults, **hyperparameters})
    )
    optimizer.winnow_needs_hessian = entry.needs_hessian  # read by backward_and_step
    return optimizer


def _fused_where_kernels_run(
    entry: OptimizerEntry, optimizer: torch.optim.Optimizer
) -> torch.optim.Optimizer:
    """``entry.fused`` over the eager ``optimizer``'s groups (same hyperparameters, same state
    layout) when the kernels run on its parameters' device; else ``optimizer`` unchanged."""
    first = next((p for g in optimizer.param_groups for p in g["params"]), None)
    if entry.fused is None or first is None or not backend.use_triton(first.device):
        return optimizer
    return entry.fused.from_eager(optimizer)


# --- backward + step ----------------------------------------------------------------------------


def _refreshes_hessian(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the coming ``step()`` takes Hessian-vector products through ``p.grad``: for an
    optimizer of an entry that ``needs_hessian`` (marked by ``build_optimizer``), on the steps
    that refresh its estimate.

    pytorch_optimizer's Hessian optimizers (SophiaH) refresh on steps where (steps taken) %
    ``update_period`` == 0; only those backward passes need ``create_graph=True`` (a double
    backward costs about one more backward).
    """
    if not getattr(optimizer, "winnow_needs_hessian", False):
        return False
    return optimizer.param_groups[0].get("step", 0) % optimizer.update_period == 0


def _detach_grads(optimizer: torch.optim.Optimizer) -> None:
    """Replace each gradient by its value without the graph behind it.

    After ``backward(create_graph=True)`` a parameter's ``.grad`` holds a graph that references
    the parameter: a C++ reference cycle that Python's gc cannot break (the model would never be
    freed). Dropping the graph breaks it while keeping the gradient values readable.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.grad_fn is not None:
                p.grad = p.grad.detach()


def backward_and_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """``zero_grad(set_to_none=True)``, ``loss.backward()`` (building the graph when the
    optimizer will take Hessian-vector products this step), ``step()``; no graph outlives it."""
    optimizer.zero_grad(set_to_none=True)
    if not _refreshes_hessian(optimizer):
        loss.backward()
        optimizer.step()
        return
    with warnings.catch_warnings():
        # torch warns of the parameter <-> gradient cycle; _detach_grads breaks it below.
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        loss.backward(create_graph=True)
    try:
        optimizer.step()
    finally:
        _detach_grads(optimizer)
