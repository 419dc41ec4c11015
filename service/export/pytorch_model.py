"""``model.py`` of the ``pytorch`` export format: a recipe's network as plain PyTorch source that
imports only torch (``model_source``), and the check that it computes what winnow's network
computes (``check_model_sources``).

How the source is made. winnow's network is built (``Candidate.build_model``) and its module
tree is walked; the source rebuilds the same tree under the same names:

- torch built-ins (Linear, Conv2d, the norms, activations, pooling, Dropout, Flatten, Identity,
  Sequential, ModuleList, ModuleDict) are constructor calls whose arguments are read from the
  built module (``_TORCH_ARGS``);
- winnow's leaf modules whose constructors are torch-only (the norms of
  ``search_space/norms.py``, the quantizers of ``search_space/quantization.py``) are embedded
  verbatim with ``inspect.getsource`` and called with arguments read from the module
  (``_WINNOW_ARGS``);
- winnow's family blocks (``MBConv``, ``Cell``, ``NB201Network``, ...) build their children
  with winnow's registries, so their ``__init__`` is not embedded: the class is re-declared
  with an ``__init__`` that takes its children and plain attributes, and its other methods
  (``forward``) are embedded verbatim;
- what winnow adds to a layer after building it is re-added by three small helpers of the
  file: ``initialized`` (the init a norm asks of its feeding layers, recorded by
  ``norms.prepare_layer`` as ``winnow_init``), ``parametrized`` (weight standardization and
  weight fake quantization, ``torch.nn.utils.parametrize``) and ``input_quantized`` (the
  activation quantizer and its forward pre-hook).

Whatever embedded code reads from its module's globals (helpers, constants) is embedded too,
found from the bytecode's global loads (``_global_names``), so the dependency list is the code's
own and cannot go stale; a name that is neither torch, math, a builtin, a plain constant nor a
function or class of the modules in ``EMBEDDABLE_MODULES`` (a registry, pydantic, winnow
itself) makes the export fail naming the class that reads it. An entry point of
``winnow.kernels`` (a Triton kernel or its fallback) is carried as its ``torch_fallback``, a
torch-only function of the same name (the norms' ``LayerNorm2d`` / ``RMSNorm2d`` read two).
Each constructor call is checked
at export time: the module it builds must have the built module's state_dict keys and shapes.

Because the leaves are constructed in the tree's order, which is the order winnow's builders
construct them in, ``torch.manual_seed(s); build_model()`` starts from the same parameters as
winnow's network built under that seed (a retrained export starts where winnow started).
Identical subtrees (the cells of a stage) are built by one named function each, so a 15-cell
network reads as its stages. The source is a function of the recipe only: same recipe, same
bytes.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import dis
import inspect
import json
import math
import re
import sys
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from winnow.search_space import quantization
from winnow.search_space.archs import FAMILIES
from winnow.search_space.candidate import Candidate
from winnow.search_space.datasets import load_dataset
from winnow.service.export.errors import ExportError as FormatError
from winnow.service.search_spec import Task

FILE_NAME = "model.py"

# The winnow modules whose torch-only functions, classes and constants model.py may carry.
EMBEDDABLE_MODULES = (
    "winnow.search_space.norms",
    "winnow.search_space.quantization",
    "winnow.search_space.archs.mlp",
    "winnow.search_space.archs.macro",
    "winnow.search_space.archs.nb201",
    "winnow.search_space.archs.nb201_canonical",
    "winnow.kernels.norms_torch",
    "winnow.kernels.fake_quant_torch",
)

# What model.py imports, by the object the embedded code names (and under that name only).
_IMPORTS: dict[str, tuple[Any, str]] = {
    "math": (math, "import math"),
    "torch": (torch, "import torch"),
    "F": (F, "import torch.nn.functional as F"),
    "nn": (nn, "from torch import nn"),
    "Tensor": (torch.Tensor, "from torch import Tensor"),
    "parametrize": (parametrize, "from torch.nn.utils import parametrize"),
}
_CONSTANT_TYPES = (bool, int, float, str, type(None))
_HELPER_NAMES = ("initialized", "parametrized", "input_quantized", "build_model", "preprocess")
_WINNOW_ATTRIBUTES = {"winnow_slot", "winnow_init"}  # builders' notes, not the network's
_ONE_LINE = 72  # longest call written on one line


class ExportError(ValueError):
    """A network model.py cannot carry; the message names the module or class at fault."""


# ----------------------------------------------------------------------- constructor arguments


def _scalar(value: Any) -> Any:
    """A conv's ``(3, 3)`` as ``3``: torch expands a scalar to the same pair."""
    return value[0] if isinstance(value, tuple) and len(set(value)) == 1 else value


def _shape(value: tuple[int, ...]) -> Any:
    return value[0] if len(value) == 1 else value


def _float32(value: float) -> float:
    """The shortest decimal that is the same float32 (a tensor-held 0.73 reads 0.73)."""
    return float(str(np.float32(value)))


def _conv(m: nn.Conv2d) -> dict[str, Any]:
    names = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation")
    args = {name: _scalar(getattr(m, name)) for name in names}
    return args | {"groups": m.groups, "bias": m.bias is not None, "padding_mode": m.padding_mode}


def _batchnorm(m: nn.modules.batchnorm._BatchNorm) -> dict[str, Any]:
    names = ("num_features", "eps", "momentum", "affine", "track_running_stats")
    return {name: getattr(m, name) for name in names}


def _layernorm(m: nn.LayerNorm) -> dict[str, Any]:
    args = {"normalized_shape": _shape(m.normalized_shape), "eps": m.eps}
    return args | {"elementwise_affine": m.elementwise_affine, "bias": m.bias is not None}


def _rmsnorm(m: nn.RMSNorm) -> dict[str, Any]:
    args = {"normalized_shape": _shape(m.normalized_shape), "eps": m.eps}
    return args | {"elementwise_affine": m.elementwise_affine}


def _attributes(*names: str) -> Callable[[nn.Module], dict[str, Any]]:
    return lambda m: {name: getattr(m, name) for name in names}


# torch.nn classes model.py constructs, and how to read their constructor arguments back.
_TORCH_ARGS: dict[type, Callable[[nn.Module], dict[str, Any]]] = {
    nn.Linear: lambda m: {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
    },
    nn.Conv2d: _conv,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.LayerNorm: _layernorm,
    nn.GroupNorm: _attributes("num_groups", "num_channels", "eps", "affine"),
    nn.RMSNorm: _rmsnorm,
    nn.ReLU: _attributes("inplace"),
    nn.GELU: _attributes("approximate"),
    nn.SiLU: _attributes("inplace"),
    nn.Hardswish: _attributes("inplace"),
    nn.Tanh: _attributes(),
    nn.Sigmoid: _attributes(),
    nn.Dropout: _attributes("p", "inplace"),
    nn.Identity: _attributes(),
    nn.Flatten: _attributes("start_dim", "end_dim"),
    nn.AvgPool2d: _attributes(
        "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"
    ),
    nn.MaxPool2d: _attributes(
        "kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"
    ),
    nn.AdaptiveAvgPool2d: _attributes("output_size"),
}


def _skipinit(m: nn.Module) -> dict[str, Any]:
    """``SkipInitGain(gain, data_init)`` from a freshly built one: with ``data_init`` the gain
    waits in ``scale`` and ``initialized`` is False."""
    data_init = not bool(m.initialized)
    gain = m.scale if data_init else m.gain
    return {"gain": _float32(gain.item()), "data_init": data_init}


def _winnow_args() -> dict[type, Callable[[nn.Module], dict[str, Any]]]:
    from winnow.search_space import norms

    return {
        norms.LayerNorm2d: _layernorm,
        norms.RMSNorm2d: _rmsnorm,
        norms.BatchChannelNorm: lambda m: {
            "num_features": m.batch.num_features,
            "spatial": isinstance(m.batch, nn.BatchNorm2d),
        },
        norms.EvoNormB0: lambda m: {
            "num_features": m.weight.numel(),
            "momentum": m.momentum,
            "eps": m.eps,
        },
        norms.EvoNormS0: lambda m: {"num_features": m.weight.numel(), "eps": m.eps},
        norms.SkipInitGain: _skipinit,
        norms.WeightStandardization: _attributes("eps"),
        quantization.WeightFakeQuant: _attributes("bits", "per_channel", "symmetric"),
        quantization.ActivationFakeQuant: _attributes("bits", "symmetric", "momentum"),
    }


# ---------------------------------------------------------------------------- embedding code


def _global_names(source: str) -> set[str]:
    """Names ``source`` reads from its module's globals (or builtins): every global load of
    every code object in it, less what a class body or the module level defines itself."""
    flags = __future__.annotations.compiler_flag  # annotations stay strings, as in model.py
    code = compile(source, "<embedded>", "exec", flags=flags, dont_inherit=True)
    found: set[str] = set()
    pending = [code]
    while pending:
        current = pending.pop()
        loaded, stored = set(), set()
        for instruction in dis.get_instructions(current):
            if instruction.opname in ("STORE_NAME", "STORE_GLOBAL"):
                stored.add(instruction.argval)
            elif instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                loaded.add(instruction.argval)
        # a class body or the module level may read what it defined itself (a function's
        # globals are the module's: what it stores there is still read from there)
        found |= (
            loaded - stored if current.co_name == "<module>" or _is_class_body(current) else loaded
        )
        pending += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    return {name for name in found if not (name.startswith("__") and name.endswith("__"))}


def _is_class_body(code: types.CodeType) -> bool:
    return "__qualname__" in code.co_names and "__module__" in code.co_names


def _constant(value: Any) -> bool:
    if isinstance(value, tuple | frozenset):
        return all(_constant(v) for v in value)
    return isinstance(value, _CONSTANT_TYPES)


def _snake(name: str) -> str:
    """``NB201Network`` -> ``nb201_network``, ``ReLUConvNorm`` -> ``re_lu_conv_norm``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class _Source:
    """What model.py defines beside ``build_model``: imports, then constants, functions and
    classes in dependency order (each after what it reads at definition time)."""

    def __init__(self) -> None:
        self.imports: set[str] = {"torch", "nn"}
        self.constants: dict[str, str] = {}  # name -> its assignment
        self.blocks: dict[str, str] = {}  # name -> its source, in definition order
        self.objects: dict[str, Any] = {}
        self.signatures: dict[type, tuple[list[str], list[str]]] = {}

    def _claim(self, name: str, obj: Any, owner: str) -> bool:
        """Whether ``name`` is new; fails when two different objects would share it."""
        if name in _HELPER_NAMES or name in _IMPORTS:
            raise ExportError(f"{owner}: {name!r} is a name model.py uses for its own")
        if name in self.objects:
            if self.objects[name] is not obj:
                raise ExportError(f"{owner}: two different objects named {name!r} are needed")
            return False
        self.objects[name] = obj
        return True

    def need(self, obj: Any, owner: str) -> str:
        """Embed a function or class of winnow verbatim (and what it reads); its name."""
        name = obj.__name__
        if self._claim(name, obj, owner):
            source = textwrap.dedent(inspect.getsource(obj))
            self._resolve(source, sys.modules[obj.__module__], name)
            self.blocks[name] = source.rstrip() + "\n"
        return name

    def _resolve(self, source: str, module: types.ModuleType, owner: str) -> None:
        """Embed or import every global ``source`` reads; fail on one model.py cannot carry."""
        for name in sorted(_global_names(source)):
            if name not in vars(module):
                if hasattr(builtins, name):
                    continue
                raise ExportError(f"{owner} reads {name!r}, which its module does not define")
            # a winnow.kernels entry point: model.py carries its torch fallback (same name)
            value = _torch_fallback(vars(module)[name])
            if name in _IMPORTS and _IMPORTS[name][0] is value:
                self.imports.add(name)
            elif _constant(value):
                if self._claim(name, value, owner):
                    self.constants[name] = f"{name} = {value!r}"
            elif self._embeddable(value):
                self.need(value, owner)
            else:
                raise ExportError(
                    f"{owner} reads {name!r} ({type(value).__name__} from "
                    f"{getattr(value, '__module__', module.__name__)}), which model.py cannot "
                    "carry: it may use torch, math, plain constants and the torch-only code of "
                    f"{', '.join(EMBEDDABLE_MODULES)}"
                )

    @staticmethod
    def _embeddable(value: Any) -> bool:
        is_code = isinstance(value, types.FunctionType | type)
        return is_code and getattr(value, "__module__", None) in EMBEDDABLE_MODULES

    def container_class(self, cls: type, module: nn.Module, path: str) -> str:
        """Re-declare a winnow block whose ``__init__`` builds with winnow's registries: an
        ``__init__`` taking its children and plain attributes, its other methods verbatim."""
        children = list(module._modules)
        attributes = sorted(set(vars(module)) - set(vars(nn.Module())) - _WINNOW_ATTRIBUTES)
        known = self.signatures.setdefault(cls, (children, attributes))
        if known != (children, attributes):
            raise ExportError(f"{path}: this {cls.__name__} has other parts than another one")
        name = cls.__name__
        if not self._claim(name, cls, path):
            return name
        base = next(b for b in cls.__mro__[1:] if b.__module__.startswith("torch."))
        if base not in (nn.Module, nn.Sequential) or (base is nn.Sequential and attributes):
            raise ExportError(f"{path}: cannot re-declare {name}, a {base.__name__} subclass")
        lines = [f"class {name}(nn.{base.__name__}):"]
        if cls.__doc__:
            lines.append(textwrap.indent(f'"""{inspect.cleandoc(cls.__doc__)}"""', "    "))
        if base is nn.Module:
            lines += [""] if cls.__doc__ else []
            lines += self._init_lines(children, attributes)
        for attribute, value in vars(cls).items():
            if attribute in ("__module__", "__qualname__", "__doc__", "__init__"):
                continue
            if attribute.startswith("__") and attribute.endswith("__"):
                continue  # __annotations__, __firstlineno__, __static_attributes__
            if not isinstance(value, types.FunctionType):
                raise ExportError(f"{name}.{attribute} is not a method; model.py cannot carry it")
            method = textwrap.dedent(inspect.getsource(value))
            self._resolve(method, sys.modules[cls.__module__], name)
            lines += ["", textwrap.indent(method.rstrip(), "    ")]
        self.blocks[name] = "\n".join(lines) + "\n"
        return name

    @staticmethod
    def _init_lines(children: list[str], attributes: list[str]) -> list[str]:
        parameters = ["self"] + [f"{c}: nn.Module" for c in children] + attributes
        body = [f"        self.{n} = {n}" for n in children + attributes]
        signature = f"    def __init__({', '.join(parameters)}) -> None:"
        if len(signature) > 96:
            signature = "\n".join(
                ["    def __init__(", *(f"        {p}," for p in parameters), "    ) -> None:"]
            )
        return [
            signature,
            "        super().__init__()",
            *body,
        ]


# ------------------------------------------------------------------ the tree as an expression


@dataclass(eq=False)
class _Call:
    """A call (or a list / dict literal: ``head`` empty) of model.py's ``build_model``."""

    head: str
    items: list[tuple[str, _Call | str]]  # (prefix: "" or "name=" or '"key": ', argument)
    brackets: str = "()"
    hoist: str | None = None  # the class of a family block, built by a named function if repeated


def _value(value: Any, where: str) -> _Call | str:
    """A plain attribute as source: sequences as nodes, so that a long one is split a line per
    item, as ruff formats it."""
    if isinstance(value, list | tuple) and len(value) > 1:
        items = [("", _value(item, where)) for item in value]
        return _Call("", items, "[]" if isinstance(value, list) else "()")
    return _literal(value, where)


def _literal(value: Any, where: str) -> str:
    # strings in double quotes, as ruff formats them (JSON's spelling is Python's for ASCII)
    is_plain = isinstance(value, str) and value.isascii() and value.isprintable()
    text = json.dumps(value) if is_plain else repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise ExportError(f"{where}: {text[:60]} is not a literal model.py can write")
    return text


def _arguments(cls: type, values: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """Required parameters positionally, the others by name where they differ from the
    default."""
    signature = inspect.signature(cls.__init__)
    items = []
    for name, value in values.items():
        default = signature.parameters[name].default
        if default is inspect.Parameter.empty:
            items.append(("", _literal(value, where)))
        elif not (type(value) is type(default) and value == default):
            items.append((f"{name}=", _literal(value, where)))
    return items


def _torch_fallback(value: Any) -> Any:
    if getattr(value, "__module__", "").startswith("winnow.kernels."):
        return getattr(value, "torch_fallback", value)
    return value


class _Walker:
    def __init__(self, source: _Source) -> None:
        self.source = source
        self.winnow_args = _winnow_args()

    def module(self, module: nn.Module, path: str) -> _Call:
        cls = parametrize.type_before_parametrizations(module)
        extras = self._extras(module, path)
        if cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
            call = self._container(cls, module, path)
        elif cls in _TORCH_ARGS or cls in self.winnow_args:
            call = self._leaf(cls, module, path, extras)
        elif getattr(cls, "__module__", "") in EMBEDDABLE_MODULES:
            call = self._block(cls, module, path)
        else:
            raise ExportError(f"{path or 'the network'}: model.py cannot rebuild {cls.__name__}")
        return self._wrap(call, module, path)

    def _children(self, module: nn.Module, path: str, names: list[str]) -> list[_Call]:
        return [self.module(module._modules[n], f"{path}.{n}".lstrip(".")) for n in names]

    def _container(self, cls: type, module: nn.Module, path: str) -> _Call:
        names = list(module._modules)
        if cls is not nn.ModuleDict and names != [str(i) for i in range(len(names))]:
            raise ExportError(f"{path}: a {cls.__name__} with named children {names}")
        if parametrize.is_parametrized(module) or module._forward_pre_hooks:
            raise ExportError(f"{path}: a {cls.__name__} with parametrizations or hooks")
        children = self._children(module, path, names)
        if cls is nn.ModuleDict:
            items = [(f"{_literal(n, path)}: ", c) for n, c in zip(names, children, strict=True)]
            return _Call("nn.ModuleDict", [("", _Call("", items, "{}"))])
        if cls is nn.ModuleList:
            return _Call("nn.ModuleList", [("", _Call("", [("", c) for c in children], "[]"))])
        return _Call("nn.Sequential", [("", c) for c in children])

    def _extras(self, module: nn.Module, path: str) -> list[str]:
        """What winnow attached to the module beyond its constructor's children."""
        hooks = [h for h in module._forward_pre_hooks.values()]
        if hooks and hooks != [quantization._quantize_input]:
            raise ExportError(f"{path}: model.py cannot carry its forward pre-hooks {hooks}")
        for kind in ("_forward_hooks", "_backward_hooks", "_backward_pre_hooks"):
            if getattr(module, kind):
                raise ExportError(f"{path}: model.py cannot carry its {kind.strip('_')}")
        if hooks and "input_quantizer" not in module._modules:
            raise ExportError(f"{path}: an input-quantizing hook without an input_quantizer")
        return [n for n in ("parametrizations", "input_quantizer") if n in module._modules]

    def _leaf(self, cls: type, module: nn.Module, path: str, extras: list[str]) -> _Call:
        values = (_TORCH_ARGS.get(cls) or self.winnow_args[cls])(module)
        if cls in _TORCH_ARGS:
            if getattr(nn, cls.__name__, None) is not cls:
                raise ExportError(f"{path}: {cls.__name__} is not torch.nn.{cls.__name__}")
            head = f"nn.{cls.__name__}"
        else:
            head = self.source.need(cls, path or "the network")
        self._check_rebuilt(cls, values, module, path, extras)
        return _Call(head, _arguments(cls, values, f"{path}: {cls.__name__}"))

    @staticmethod
    def _check_rebuilt(cls, values, module, path, extras) -> None:
        """The constructor call must give the module's own state: same keys, shapes, dtypes."""
        with torch.random.fork_rng(devices=[]):
            rebuilt = cls(**values)
        wanted = {}
        for key, tensor in module.state_dict().items():
            if key.startswith("input_quantizer.") and "input_quantizer" in extras:
                continue
            if key.startswith("parametrizations."):
                parts = key.split(".")  # parametrizations.<tensor>.original (or <i>.<buffer>)
                if parts[2] != "original":
                    continue
                key = parts[1]
            wanted[key] = (tuple(tensor.shape), tensor.dtype)
        got = {k: (tuple(t.shape), t.dtype) for k, t in rebuilt.state_dict().items()}
        if got != wanted:
            raise ExportError(
                f"{path}: {cls.__name__}({values}) does not rebuild the module's state "
                f"({sorted(set(got) ^ set(wanted)) or 'shapes differ'})"
            )

    def _block(self, cls: type, module: nn.Module, path: str) -> _Call:
        head = self.source.container_class(cls, module, path or "the network")
        names = list(module._modules)
        children = self._children(module, path, names)
        if issubclass(cls, nn.Sequential):
            return _Call(head, [("", c) for c in children], hoist=head)
        attributes = self.source.signatures[cls][1]
        items: list[tuple[str, _Call | str]] = [
            (f"{n}=", c) for n, c in zip(names, children, strict=True)
        ]
        items += [(f"{a}=", _value(getattr(module, a), f"{path}.{a}")) for a in attributes]
        return _Call(head, items, hoist=head)

    def _wrap(self, call: _Call, module: nn.Module, path: str) -> _Call:
        """Re-add what winnow did to the built layer: its init, parametrizations, quantizer."""
        init = getattr(module, "winnow_init", None)
        if init is not None:
            call = _Call("initialized", [("", call), ("", self.source.need(init, path))])
        if parametrize.is_parametrized(module):
            self.source.imports.add("parametrize")
            chains = []
            for tensor, chain in module.parametrizations.items():
                if not hasattr(chain, "original"):
                    raise ExportError(f"{path}: {tensor} has several originals")
                steps = [("", self.module(p, f"{path}.parametrizations.{tensor}")) for p in chain]
                chains.append((f"{tensor}=", _Call("", steps, "[]")))
            call = _Call("parametrized", [("", call), *chains])
        if "input_quantizer" in module._modules and module._forward_pre_hooks:
            self.source.need(quantization._quantize_input, path)
            quantizer = self.module(module.input_quantizer, f"{path}.input_quantizer")
            call = _Call("input_quantized", [("", call), ("", quantizer)])
        return call


# -------------------------------------------------------------------------------- formatting


class _Formatter:
    """``_Call`` trees as text; a family block that occurs twice or more (e.g. the cells of a
    stage) is built by one named function, defined once."""

    def __init__(self, root: _Call) -> None:
        self.plain: dict[int, str] = {}
        counts: dict[str, int] = {}
        for node in self._hoistable(root):
            text = self._text(node, hoisting=False)
            counts[text] = counts.get(text, 0) + 1
        self.repeated = {text for text, n in counts.items() if n > 1 and text.count("\n") >= 3}
        self.functions: dict[str, str] = {}  # plain text -> function name
        self.definitions: list[str] = []

    def _hoistable(self, node: _Call | str):
        if isinstance(node, _Call):
            if node.hoist:
                yield node
            for _, child in node.items:
                yield from self._hoistable(child)

    def _text(self, node: _Call | str, hoisting: bool = True) -> str:
        if isinstance(node, str):
            return node
        if not hoisting and id(node) in self.plain:
            return self.plain[id(node)]
        if hoisting and node.hoist and self.plain.get(id(node)) in self.repeated:
            return self._function(node) + "()"
        parts = [prefix + self._text(child, hoisting) for prefix, child in node.items]
        text = f"{node.head}{node.brackets[0]}{', '.join(parts)}{node.brackets[1]}"
        if "\n" in text or len(text) > _ONE_LINE:
            body = textwrap.indent(",\n".join(parts) + ",", "    ")
            text = f"{node.head}{node.brackets[0]}\n{body}\n{node.brackets[1]}"
        if not hoisting:
            self.plain[id(node)] = text
        return text

    def _function(self, node: _Call) -> str:
        plain = self.plain[id(node)]
        if plain not in self.functions:
            same_class = sum(
                1 for n in self.functions.values() if n.startswith(f"make_{_snake(node.hoist)}_")
            )
            name = f"make_{_snake(node.hoist)}_{same_class + 1}"
            self.functions[plain] = name
            parts = [prefix + self._text(child) for prefix, child in node.items]
            body = textwrap.indent(",\n".join(parts) + ",", "        ")
            self.definitions.append(
                f"def {name}() -> {node.hoist}:\n"
                f"    return {node.head}{node.brackets[0]}\n{body}\n    {node.brackets[1]}\n"
            )
        return self.functions[plain]

    def expression(self, root: _Call) -> str:
        return self._text(root)


# ------------------------------------------------------------------------------ the file


_HELPERS = {
    "initialized": '''
def initialized(module: nn.Module, init) -> nn.Module:
    """``module`` after ``init(module)``: the init some norms ask of the layers feeding them."""
    init(module)
    return module
''',
    "parametrized": '''
def parametrized(module: nn.Module, **chains: list[nn.Module]) -> nn.Module:
    """``module`` with each named tensor computed by its chain of parametrizations, in order
    (torch.nn.utils.parametrize: the state_dict holds ``parametrizations.<name>.original``)."""
    for tensor, chain in chains.items():
        for parametrization in chain:
            parametrize.register_parametrization(module, tensor, parametrization)
    return module
''',
    "input_quantized": '''
def input_quantized(module: nn.Module, quantizer: nn.Module) -> nn.Module:
    """``module`` fake-quantizing its input with ``quantizer``, run by a forward pre-hook."""
    module.input_quantizer = quantizer
    module.register_forward_pre_hook(_quantize_input)
    return module
''',
}

_SOURCES = {
    "digits": "scikit-learn's load_digits().images[:, None]: (N, 1, 8, 8) floats 0-16",
    "npz": "the npz file stores them (its train_x / test_x arrays, e.g. uint8 N x C x H x W)",
    "cifar10": "the CIFAR-10 python batches hold them: uint8 (N, 3, 32, 32)",
    "synthetic": "winnow's synthetic dataset makes them (float32)",
}


@dataclass(frozen=True)
class TaskShape:
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int


def task_of(recipe: dict[str, Any]) -> TaskShape:
    """The recipe's dataset, input shape and classes (as the engine gets them)."""
    task = Task.model_validate(recipe["training"]["task"])
    input_shape, num_classes = task.shape()  # as the engine gets them
    return TaskShape(task.dataset, tuple(input_shape), num_classes)


def _floats(tensor: torch.Tensor) -> str:
    """float32 values as Python floats, which ``torch.tensor(..., dtype=torch.float32)`` reads
    back to the same bits."""
    return "[" + ", ".join(repr(v) for v in tensor.float().flatten().tolist()) + "]"


def _header(recipe: dict[str, Any], candidate: Candidate, task: TaskShape) -> str:
    identity = [
        f"search {recipe.get('search_id', '-')}, trial {recipe.get('trial_id', '-')}",
        f"candidate {candidate.key}: {candidate.describe()}",
        f"task {task.dataset}: inputs {task.input_shape}, {task.num_classes} classes",
        f"winnow {recipe.get('winnow_version', '-')}, recipe format {recipe.get('format', '-')}",
    ]
    axes = [
        f"{axis}: {json.dumps(value, sort_keys=True)}"
        for axis, value in sorted(candidate.model_dump(mode="json").items())
    ]
    lines = [*identity, "", *axes]
    wrapped = [
        part for line in lines for part in textwrap.wrap(line, 94, subsequent_indent="    ") or [""]
    ]
    comments = "\n".join(f"# {line}".rstrip() for line in wrapped)
    doc = '''"""A network found by winnow, as plain PyTorch: this file imports only torch.

build_model() builds it with winnow's module names and shapes, so the state_dict of winnow's
trained network loads with ``load_state_dict(state, strict=True)``; built after
``torch.manual_seed(s)`` it starts from the parameters winnow's network starts from under that
seed. preprocess(x) turns inputs as the task's source gives them into what the network was
trained on. The recipe it comes from, and its candidate axis by axis:
"""'''
    return f"{doc}\n\n{comments}\n"


def _docstring(text: str) -> str:
    """A function's docstring, wrapped at 96 columns and indented for its body."""
    lines = textwrap.wrap(text.replace('"' * 3, "'" * 3), 92)
    return '"' * 3 + "\n    ".join(lines) + '"' * 3


def _preprocess(task: TaskShape) -> str:
    dataset = load_dataset(task.dataset)  # the statistics the engine normalises with
    source = _SOURCES.get(task.dataset.partition(":")[0], "the task's source gives them")
    doc = _docstring(
        f"Inputs as {source}, as the network sees them: divided by SCALE, then standardized "
        "by MEAN and STD (per channel, or per feature of flat inputs: the training split's "
        "statistics, after scaling), exactly as winnow's dataset loader does."
    )
    return f"""
def preprocess(x: Tensor) -> Tensor:
    {doc}
    x = torch.as_tensor(x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    x = x.float() / SCALE
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(shape)
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).view(shape)
    return (x - mean) / std


# The task: {task.dataset}
INPUT_SHAPE = {task.input_shape!r}
NUM_CLASSES = {task.num_classes!r}
SCALE = {float(dataset.scale)!r}
MEAN = {_floats(dataset.mean)}
STD = {_floats(dataset.std)}
"""


def _import_lines(names: set[str]) -> str:
    """isort's layout: ``import`` lines, then ``from`` lines, one per module."""
    plain = sorted(_IMPORTS[n][1] for n in names if _IMPORTS[n][1].startswith("import"))
    modules: dict[str, list[str]] = {}
    for name in names:
        line = _IMPORTS[name][1]
        if line.startswith("from"):
            module = line.split()[1]
            modules.setdefault(module, []).append(name)
    froms = [f"from {m} import {', '.join(sorted(modules[m]))}" for m in sorted(modules)]
    return "\n".join(plain + froms) + "\n"


def model_source(recipe: dict[str, Any]) -> str:
    """``model.py`` for a recipe (``readout.recipe``): the candidate's network as torch-only
    source with ``build_model()`` and ``preprocess(x)``. Raises ``ExportError`` naming what it
    cannot carry. Deterministic: the same recipe gives the same text."""
    candidate = Candidate.model_validate(recipe["candidate"])
    task = task_of(recipe)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights
        model = candidate.build_model(task.num_classes, task.input_shape)
    try:
        return network_source(recipe, model)
    except ExportError as error:
        if FAMILIES.get(candidate.architecture["family"]).check is None:
            raise  # winnow's own families always export: a bug, not the user's to fix
        raise FormatError(_user_network(candidate, error)) from None


def _user_network(candidate: Candidate, error: ExportError) -> str:
    """Why a user's network (a ``custom`` builder's) has no model.py, and what to export."""
    builder = candidate.architecture.get("builder", "?")
    return (
        f"{error}: model.py rebuilds torch's modules and winnow's own, and this custom "
        f"network is {builder}'s. Export format 'weights' (its trained state_dict, for "
        "that builder's network) or 'onnx' (the network itself), or 'recipe' (the builder "
        "and its params) instead"
    )


def network_source(recipe: dict[str, Any], model: nn.Module) -> str:
    """``model_source`` of the recipe's network as built by ``Candidate.build_model`` (and not
    trained since: constructor arguments are read from the fresh module's state)."""
    candidate = Candidate.model_validate(recipe["candidate"])
    task = task_of(recipe)
    source = _Source()
    root = _Walker(source).module(model, "")
    formatter = _Formatter(root)
    expression = formatter.expression(root)
    calls = "\n".join([expression, *formatter.definitions])
    used = [name for name in _HELPERS if re.search(rf"\b{name}\(", calls)]
    imports = _import_lines(source.imports | {"Tensor"})  # preprocess is annotated with it
    summary = f"The network {candidate.describe()}, for inputs {task.input_shape} and "
    build = f"""
def build_model() -> nn.Module:
    {_docstring(summary + f"{task.num_classes} classes.")}
    return {textwrap.indent(expression, "    ").lstrip()}
"""
    opening = [
        _header(recipe, candidate, task),
        "from __future__ import annotations\n",
        imports,
        *(["\n".join(source.constants.values()) + "\n"] if source.constants else []),
    ]
    parts = [
        "\n".join(part.rstrip("\n") + "\n" for part in opening),
        *source.blocks.values(),
        *(_HELPERS[name].lstrip("\n") for name in _HELPERS if name in used),
        *formatter.definitions,
        build.lstrip("\n"),
        _preprocess(task).lstrip("\n"),
    ]
    return "\n\n".join(part.rstrip("\n") + "\n" for part in parts).rstrip("\n") + "\n"
