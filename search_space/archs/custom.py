"""``custom``: the user's own network, built by a function named by import path.

```yaml
architecture:
  family: custom
  builder: my_pkg.models:build
  activation: [relu, gelu]
  params: {depth: [2, 4], width: {low: 32, high: 256, log: true}}
```

The builder is called as ``build(input_shape, num_classes, norm_layer, act_layer, **params)``
and returns an ``nn.Module`` (as timm's ``create_model(norm_layer=..., act_layer=...)``
takes its layers as factories): ``norm_layer(num_features, spatial=True)`` is the candidate's
normalization from winnow's registry (``spatial=True`` for ``(batch, channels, H, W)``
inputs, ``False`` for ``(batch, features)``) and ``act_layer()`` the candidate's activation,
so the space's normalization and activation axes reach the user's model. Each ``params``
entry is a Param (a value, a choice list or a ``{low, high, log, step}`` range), decided as
``architecture.params.<name>`` by every sampler.

What winnow does to the built network:

- the layers that feed a norm get what that norm asks of them (``norms.prepare_layer``: weight
  standardization for ``bcn_ws``, Kaiming init for ``none``). Which layers feed a norm is read
  from one forward pass of a zero batch (only for those two norms): the Conv2d/Linear that
  ran last before each norm ``norm_layer`` made;
- quantization applies to its Conv2d/Linear layers (``apply_quantization``), with weight bits
  decided once (``scope: global``): its layers are not known before the builder runs, so there
  are no groups or layers to decide per (a layer the builder tags ``winnow_slot`` is looked up
  by that tag, as any slot);
- the structural hash is the builder's path, activation and params (with the other axes); the
  functional hash probes the network on inputs of the task's shape (``probe_shape``: the
  builder may need its real input size), its modules' names being their places.

The builder's import is checked when a search starts (``check_builder``: a missing module or
function, a builder that raises or returns something else is a ``SpecError`` naming the field)
and again in every worker that builds a candidate (``BuilderError``: the trial fails with the
builder's message). Results are keyed by the builder's path and params: a builder whose code
changes under the same path answers with the old results on reuse across searches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from winnow.search_space.activations import ACTIVATIONS, make_activation
from winnow.search_space.archs.base import ArchitectureView, ProbeSize
from winnow.search_space.norms import NORMS, make_norm, prepare_layer
from winnow.search_space.params import Chooser, Param, decide, param_values
from winnow.search_space.quantization import QUANTIZED_LAYERS
from winnow.search_space.user_code import import_object, parse_import_path

BUILDER_FIELD = "architecture.builder"
# The builder's own arguments: a param of one of these names would be passed twice.
RESERVED = ("input_shape", "num_classes", "norm_layer", "act_layer")
MAX_PARAMS = 64  # a builder's keyword arguments; more is a typo (or a table, not a space)
PROBES_TASK_SHAPE = True  # the functional hash probes the task's input shape (see Family)


class BuilderError(RuntimeError):
    """A builder that raised, or returned something other than an ``nn.Module``."""


class CustomSpace(BaseModel):
    """Spec section for ``family: custom``: the user's network, built by ``builder``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    family: Literal["custom"] = "custom"
    builder: str
    """The import path ``MODULE:FUNCTION`` of the builder, called as ``build(input_shape,
    num_classes, norm_layer, act_layer, **params)`` and returning an ``nn.Module``; a server
    imports only modules of ``winnow serve --allow-module``."""
    activation: Param = "relu"
    """What ``act_layer()`` makes (see the activations under Names)."""
    params: dict[str, Param] = {}
    """The builder's keyword arguments, each a value, a choice list or a ``{low, high, log,
    step}`` range (decided as ``architecture.params.<name>``)."""

    @field_validator("builder")
    @classmethod
    def _import_path(cls, builder: str) -> str:
        parse_import_path(builder)  # text only: nothing is imported at parse time
        return builder

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, activation: Any) -> Any:
        values = param_values(activation)
        allowed = ", ".join(ACTIVATIONS.names())
        if values is None:
            raise ValueError(f"takes a value or a list of values, not a range; allowed: {allowed}")
        unknown = [v for v in values if v not in ACTIVATIONS]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} not allowed; allowed: {allowed}")
        return activation

    @field_validator("params")
    @classmethod
    def _keyword_names(cls, params: dict[str, Any]) -> dict[str, Any]:
        if len(params) > MAX_PARAMS:
            raise ValueError(f"{len(params)} params; a builder takes at most {MAX_PARAMS}")
        for name in params:
            if not name.isidentifier() or name in RESERVED:
                raise ValueError(
                    f"{name!r} is not a keyword argument the builder can take (an identifier, "
                    f"not one of {', '.join(RESERVED)})"
                )
        return params


def suggest(space: CustomSpace, chooser: Chooser) -> dict[str, Any]:
    return {
        "family": "custom",
        "builder": space.builder,
        "activation": decide(chooser, "architecture.activation", space.activation),
        "params": {
            name: decide(chooser, f"architecture.params.{name}", param)
            for name, param in sorted(space.params.items())
        },
    }


def decisions(arch: dict[str, Any]) -> dict[str, Any]:
    flat = {f"architecture.params.{k}": v for k, v in arch.get("params", {}).items()}
    return {"architecture.activation": arch.get("activation"), **flat}


def imports(space: CustomSpace) -> dict[str, str]:
    """``{field: import path}`` of the user code the section names (for ``--allow-module``)."""
    return {"builder": space.builder}


# --- building ---------------------------------------------------------------------------------


def build(arch: dict[str, Any], norm: str, num_classes: int, input_shape: tuple[int, ...]):
    """The builder's network, its norm-feeding layers prepared for ``norm``."""
    path = arch["builder"]
    builder = import_object(path)
    made: list[nn.Module] = []

    def norm_layer(num_features: int, spatial: bool = True) -> nn.Module:
        layer = make_norm(norm, num_features, spatial)
        made.append(layer)
        return layer

    act_layer = functools.partial(make_activation, arch.get("activation", "relu"))
    params = arch.get("params", {})
    try:
        model = builder(tuple(input_shape), num_classes, norm_layer, act_layer, **params)
    except Exception as error:
        raise BuilderError(
            f"{path}({_arguments(params)}) raised {type(error).__name__}: {error}"
        ) from error
    if not isinstance(model, nn.Module):
        raise BuilderError(f"{path} returned {type(model).__name__}, not a torch.nn.Module")
    _prepare_feeding_layers(model, made, norm, input_shape)
    return model


def _arguments(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _prepare_feeding_layers(
    model: nn.Module, norms: list[nn.Module], norm: str, input_shape: tuple[int, ...]
) -> None:
    """What ``norm`` asks of the layers feeding it (weight standardization, an init), given to
    the layers ``feeding_layers`` finds; nothing to do for the other norms."""
    entry = NORMS.get(norm)
    if entry.init_layer is None and not entry.weight_standardization:
        return
    for layer in feeding_layers(model, norms, input_shape):
        prepare_layer(layer, norm)


def feeding_layers(
    model: nn.Module, norms: list[nn.Module], input_shape: tuple[int, ...]
) -> list[nn.Module]:
    """The Conv2d/Linear layers that ran last before each of ``norms`` on one forward pass of
    a zero batch (eval mode, no grad), each once, in the order they ran. The builder's code
    is not ours to read: the call order is what says which layer feeds which norm (as in
    conv -> norm -> act, and a downsampling conv -> norm)."""
    wanted, order, last = {id(n) for n in norms}, [], [None]

    def before(module: nn.Module, inputs: Any) -> None:
        if isinstance(module, QUANTIZED_LAYERS):
            last[0] = module
        elif id(module) in wanted and last[0] is not None:
            if all(layer is not last[0] for layer in order):
                order.append(last[0])
            last[0] = None

    watched = [m for m in model.modules() if isinstance(m, QUANTIZED_LAYERS) or id(m) in wanted]
    handles = [m.register_forward_pre_hook(before) for m in watched]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        device = next((p.device for p in model.parameters()), None)
        with torch.no_grad():
            model(torch.zeros(2, *input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return order


# --- hashing, quantization slots, the dashboard ------------------------------------------------


def canonical(arch: dict[str, Any], bits_for: Callable[[str], int]) -> tuple[dict, list[int]]:
    """Every decision matters (winnow cannot see inside the builder); one global bit width."""
    bits = bits_for("*")
    return {**arch, "bits": bits}, [bits]


def positions(model: nn.Module, arch: dict[str, Any]) -> dict[str, str]:
    return {}  # module names are the places: equal params build equal trees


def probe_architecture(arch: dict[str, Any], bits_for: Callable[[str], int]) -> None:
    return None  # nothing known to drop: functional hashing probes the network itself


def probe_shape(probe: ProbeSize) -> tuple[int, ...]:
    """The task's own input shape: a user's network may only run at its real input size."""
    shape = getattr(probe, "task_shape", None)
    if shape is None:
        raise ValueError(
            "the custom family's functional hash probes inputs of the task's shape: give the "
            "probe the task's (Probe(task_shape=..., num_classes=...))"
        )
    return tuple(shape)


def quant_slots(space: CustomSpace, scope: str) -> list[str]:
    raise ValueError(
        f"the custom family decides weight bits once (scope: global), not per {scope}: its "
        "layers are not known before its builder runs"
    )


def describe(arch: dict[str, Any]) -> ArchitectureView:
    """The builder and its arguments."""
    params = arch.get("params", {})
    summary = f"custom {arch.get('builder', '?')}({_arguments(params)})"
    fields = {"builder": arch.get("builder"), "activation": arch.get("activation"), **params}
    return ArchitectureView(summary, fields)


# --- the check before a search starts ----------------------------------------------------------


def check_builder(arch: dict[str, Any], norm: str, shape: Any) -> None:
    """Import the builder of ``arch`` and, when the task's ``(input shape, classes)`` is
    known, build ``arch`` with ``norm`` on torch's meta device (shapes, no memory); raises
    what ``build`` raises (``UserCodeError``, ``BuilderError``, the module's own import
    error), before any trial runs."""
    import_object(arch["builder"])
    if shape is None:
        return
    input_shape, num_classes = shape
    with torch.device("meta"):
        build(arch, norm, num_classes, tuple(input_shape))
