"""What every proxy shares: the score type, the registry entry, and which layers and weights
a proxy reads from a network built by ``winnow.search_space``.

Layers scored are the "prunable" layers of the reference code of Abdelfattah et al. 2021
("Zero-Cost Proxies for Lightweight NAS", ICLR, code "foresight"): every ``nn.Conv2d`` and
``nn.Linear``. A layer whose weight is parametrized (weight standardization, fake quantization;
see ``winnow.search_space.quantization``) is scored through the tensor that is trained, its
``parametrizations.weight.original``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

Batch = tuple[Tensor, Tensor]

PRUNABLE_LAYERS = (nn.Conv2d, nn.Linear)

# Activation modules whose inputs give NASWOT's binary codes. ReLU-like units are on where their
# input is positive; for the smooth ones (GELU, SiLU, Hardswish, ...) the sign of the input is
# the same on/off split.
ACTIVATION_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Mish,
)

DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass(frozen=True)
class ProxyScore:
    """One proxy's score of one model.

    ``value`` is None when the proxy failed or gave a non-finite score (``error`` says why).
    ``seconds`` is the proxy's own time: its exclusive work plus an equal share of every shared
    pass it reads (see ``winnow.proxies.suite``), so the seconds of a suite add up to its wall time.
    """

    value: float | None
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class ProxyEntry:
    """A registered proxy.

    ``needs`` names what the proxy reads from the shared passes on the first batches (see
    ``winnow.proxies.passes.PassPlan``); ``from_passes`` turns those passes into the score.
    A proxy that cannot share (its passes are its own: other weights, other inputs) has no
    ``needs`` and a ``standalone(model, batches, seed)`` function instead.
    """

    name: str
    reference: str
    needs: frozenset[str] = frozenset()
    from_passes: Callable[..., float] | None = None
    standalone: Callable[[nn.Module, Sequence[Batch], int], float] | None = None

    def __post_init__(self) -> None:
        if (self.from_passes is None) == (self.standalone is None):
            raise ValueError(f"proxy {self.name!r} needs exactly one of from_passes, standalone")
        if self.from_passes is not None and not self.needs:
            raise ValueError(f"proxy {self.name!r} reads shared passes but names no needs")

    @property
    def shared(self) -> bool:
        return self.from_passes is not None


def weight_of(layer: nn.Module) -> Tensor:
    """The trainable weight tensor of a Conv2d/Linear: the parametrization's ``original`` when
    the weight is parametrized, else ``layer.weight``."""
    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original
    return layer.weight


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Every Conv2d and Linear of ``model``, once each, in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, PRUNABLE_LAYERS)]


def inside_parametrization(name: str) -> bool:
    """Whether the module named ``name`` (a ``named_modules`` name) belongs to a weight
    parametrization (weight standardization, fake quantization): such modules output weights,
    not feature maps (a 3x3 kernel would look like a 4-D map)."""
    return "parametrizations" in name.split(".")


def working_copy(
    model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """A deep copy of ``model`` to score, so that nothing a proxy does (training-mode forwards
    that update norm statistics or quantization observers, hooks, re-initialised or absolute
    weights) reaches the caller's model.

    The copy is in training mode, as the reference code scores networks, except for dropout,
    which is switched off: a random mask adds noise to every proxy and breaks Zen-NAS's
    comparison of two forwards.
    """
    work = copy.deepcopy(model).to(device=device, dtype=dtype)
    work.train()
    for module in work.modules():
        if isinstance(module, DROPOUT_MODULES):
            module.eval()
    for layer in prunable_layers(work):
        weight_of(layer).requires_grad_(True)
    return work


def total(values: Sequence[Tensor]) -> float:
    """Sum of scalar tensors in float64 as a Python float, with one device sync."""
    if not values:
        return 0.0
    return float(torch.stack([v.detach().double() for v in values]).sum())
