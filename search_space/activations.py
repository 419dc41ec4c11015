"""The activation axis of a training recipe: torch.nn activation modules by name.

Entries are constructors (no arguments) of the torch.nn modules, so each use gets its own module.
None is in-place: in-place activations break hooks that read a layer's input (proxies, pruning).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from winnow.search_space.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")

ACTIVATIONS.register("relu", nn.ReLU)  # Nair & Hinton 2010
ACTIVATIONS.register("gelu", nn.GELU)  # Hendrycks & Gimpel 2016, exact erf form
ACTIVATIONS.register("silu", nn.SiLU)  # Elfwing et al. 2018 / Swish (Ramachandran et al. 2017)
ACTIVATIONS.register("hardswish", nn.Hardswish)  # Howard et al. 2019 (MobileNetV3)


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of ``ACTIVATIONS.names()``)."""
    return ACTIVATIONS.get(name)()
