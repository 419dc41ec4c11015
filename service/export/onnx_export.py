"""The ``onnx`` export format: ``model.onnx``, the recipe's network with its fake quantization
as ONNX QuantizeLinear/DequantizeLinear (Q/DQ) pairs, and a ``README.md`` saying what it is.

How winnow's quantization becomes ONNX (``export_model`` swaps every quantized Conv2d/Linear
for a :class:`_QDQLayer` in a copy of the model, then ``torch.onnx.export(dynamo=True)``):

- Weights: the fake-quantized weight is computed in torch (weight standardization first, as in
  training) and stored as its integers, so the graph holds a constant
  ``DequantizeLinear(int8/uint8 weights, scale, zero point)``, per-axis (``axis=0``, the output
  channel) where the policy is per-channel, per-tensor otherwise. The integers are those
  winnow's fake quantization rounds to, so the dequantized weights equal winnow's bit for bit.
- Activations (the input of each quantized layer, per-tensor): ``QuantizeLinear`` then
  ``DequantizeLinear`` with the observer's stored range (eval mode). A model whose observers
  never saw a training batch (an untrained model) quantizes with each batch's own range, as
  winnow does; the graph then computes that range (ReduceMin/ReduceMax) and the scale.
- Integer ranges: ONNX's Q/DQ integers are int8 (-128..127) or uint8 (0..255), and the
  exporters refuse winnow's other ranges ("ONNX allows only (0, 127), (0, 255) and (-128, 127)").
  Symmetric policies (winnow's narrow range -(2^(b-1)-1)..2^(b-1)-1, e.g. -127..127 at 8 bits)
  are exported as int8 with zero point 0 and the same scale; affine ones as uint8 with winnow's
  zero point. Where winnow's range is narrower than the type's (every symmetric policy, affine
  ones under 8 bits) a ``Clip`` to the range's float ends, (qmin - zp) * scale and
  (qmax - zp) * scale, precedes the activation's QuantizeLinear, so values outside the
  calibrated range saturate where winnow's do. Weights need no clip: their range is their own.

Numerical difference from winnow: ONNX rounds ``x / scale`` where torch's fake quantization
rounds ``x * (1 / scale)``; the two can differ in the last bit, which moves an activation that
lies on a rounding tie by one quantization step. A consumer that drops the Clip (keeping the
Q/DQ pair only) also lets a symmetric activation reach -128 (-2^(b-1)) steps where winnow stops
at -127, i.e. one step more, and only for inputs beyond the calibrated range. Float models agree
with winnow's to float rounding (ONNX Runtime's kernels against torch's). In a deep quantized
network a value that ONNX Runtime's float arithmetic moves across a rounding boundary is one
step off, and that flip compounds through the layers after it. ONNX Runtime's graph
optimizations (constant folding, fusions) make such flips frequent: ``run_onnx`` turns them
off. Measured by ``winnow bench export --sample 300`` (calibrated ranges, as trained trials
have): 298 of 300 within one output step or 1e-5, against 283 with the optimizations on; with
an uncalibrated observer (each batch quantized on its own range) tests/service/test_export_onnx.py
still sees one nb201 network 4.1 steps off.

onnx, onnxruntime and onnxscript are optional: ``pip install 'winnow[export]'``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from winnow.service.export import extras
from winnow.service.search_spec import Task

if TYPE_CHECKING:
    import torch
    from torch import nn

    from winnow.search_space.candidate import Candidate

FILE_NAME = "model.onnx"
FORMAT_NAME = "onnx"
OPSET = 18  # the dynamo exporter's default; per-axis Q/DQ needs 13


def require(*modules: str) -> None:
    for module in modules:
        extras.require(module, FORMAT_NAME)


# ----------------------------------------------------------------------- export-friendly layers


def _onnx_range(symmetric: bool) -> tuple[int, int]:
    """The ONNX integer type's range that holds winnow's: int8 for symmetric, uint8 for affine."""
    return (-128, 127) if symmetric else (0, 255)


def _integer_dtype(symmetric: bool) -> torch.dtype:
    import torch

    return torch.int8 if symmetric else torch.uint8


def _weight_before_quantization(layer: nn.Module) -> torch.Tensor:
    """The weight as the weight quantizer sees it: the original through every parametrization
    registered before the quantizer (weight standardization)."""
    from winnow.search_space.quantization import WeightFakeQuant

    weight = layer.parametrizations.weight.original
    for parametrization in layer.parametrizations.weight:
        if isinstance(parametrization, WeightFakeQuant):
            break
        weight = parametrization(weight)
    return weight


def quantized_weight(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(integers, scale, zero point) of a layer's fake-quantized weight: per output channel
    (shape [out]) when per-channel, scalars when per-tensor. ``(q - zp) * scale`` is the weight
    winnow computes, bit for bit (the integers are recovered from winnow's own output)."""
    import torch

    from winnow.search_space.quantization import (
        _channel_range,
        quantization_params,
        weight_quantizer,
    )

    quantizer = weight_quantizer(layer)
    with torch.no_grad():
        before = _weight_before_quantization(layer)
        if quantizer.per_channel:
            low, high = _channel_range(before, 0)
        else:
            low, high = torch.aminmax(before)
        scale, zero_point = quantization_params(low, high, quantizer.bits, quantizer.symmetric)
        shape = (-1,) + (1,) * (before.dim() - 1) if quantizer.per_channel else ()
        # (q - zp) * scale is exact in float32 for |q - zp| <= 255, so dividing winnow's
        # output by the scale and rounding gives back its integers exactly.
        steps = torch.round(layer.weight / scale.reshape(shape))
        integers = (steps + zero_point.reshape(shape)).to(_integer_dtype(quantizer.symmetric))
    return integers, scale, zero_point


@functools.cache
def _fake_quantize_op() -> Any:
    """``winnow_export::fake_quantize``: per-tensor fake quantization with tensor scale and zero
    point, as a torch custom op that ``to_onnx`` translates to a QuantizeLinear/DequantizeLinear
    pair (``_q_dq``). Why not torch's own ``fake_quantize_per_tensor_affine``: torch.export has
    no fake-tensor kernel for its tensor-parameter overload (``UnsupportedOperatorException:
    aten._fake_quantize_per_tensor_affine_cachemask_tensor_qparams``), which a range computed
    from the batch (an uncalibrated observer) needs."""
    import torch

    # the schema is spelled out: this module's annotations are strings (``annotations``)
    @torch.library.custom_op(
        "winnow_export::fake_quantize",
        mutates_args=(),
        schema="(Tensor x, Tensor scale, Tensor zero_point, int qmin, int qmax) -> Tensor",
    )
    def fake_quantize(x, scale, zero_point, qmin, qmax):
        return torch.fake_quantize_per_tensor_affine(
            x, scale.float(), zero_point.to(torch.int32), qmin, qmax
        )

    @fake_quantize.register_fake
    def _(x, scale, zero_point, qmin, qmax):
        return torch.empty_like(x)

    return fake_quantize


def _fake_quantize_op_overload() -> Any:
    """The op as the exported graph's nodes name it (the translation table's key)."""
    import torch

    _fake_quantize_op()
    return torch.ops.winnow_export.fake_quantize.default


def _q_dq(x, scale, zero_point, qmin: int, qmax: int):
    """The ONNX of ``winnow_export::fake_quantize`` (an onnxscript translation)."""
    from onnxscript import ir
    from onnxscript import opset18 as op

    dtype = ir.DataType.INT8 if qmin < 0 else ir.DataType.UINT8
    zero_point = op.Cast(zero_point, to=dtype)
    scale = op.Cast(scale, to=ir.DataType.FLOAT)
    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero_point), scale, zero_point)


@functools.cache
def _qdq_layer_class() -> type:
    """The export-friendly layer class, defined on first use so this module imports without
    torch (the server registers the format at start-up)."""
    import torch
    from torch import nn
    from torch.ao.quantization.fx import _decomposed  # noqa: F401  (registers the DQ ops)

    from winnow.search_space.quantization import (
        _integer_range,
        _quantize_input,
        activation_quantizer,
        quantization_params,
        weight_quantizer,
    )

    fake_quantize = _fake_quantize_op()

    class QDQLayer(nn.Module):
        """A quantized Conv2d/Linear as export-friendly torch ops: a constant DQ of its integer
        weights and a Clip + fake quantization (Q/DQ in ONNX) of its input."""

        def __init__(self, layer: nn.Module) -> None:
            super().__init__()
            self.layer = layer
            self.weight_symmetric = None
            weights = weight_quantizer(layer)
            if weights is not None:
                integers, scale, zero_point = quantized_weight(layer)
                self.weight_per_channel = weights.per_channel
                self.weight_symmetric = weights.symmetric
                self.register_buffer("weight_int", integers)
                self.register_buffer("weight_scale", scale)
                self.register_buffer("weight_zero_point", zero_point)
                # python numbers: the per-tensor DQ takes them as constants (export traces
                # buffers as inputs, and float() of one would be data-dependent)
                self.weight_scale_value = float(scale.reshape(-1)[0])
                self.weight_zero_point_value = int(zero_point.reshape(-1)[0])
                # The float weight stays unread (forward uses the integers), so the graph
                # drops it. Not removed: remove_parametrizations edits the parametrized class,
                # which this deep copy shares with the caller's model.
            self.activation = activation_quantizer(layer)
            self.calibrated = False
            if self.activation is not None:
                quantizer = self.activation
                del layer.input_quantizer
                for key, hook in list(layer._forward_pre_hooks.items()):
                    if hook is _quantize_input:  # winnow's fake-quant hook: done in forward
                        del layer._forward_pre_hooks[key]
                # decided now, not in forward: export cannot branch on a buffer's value
                self.calibrated = bool(quantizer.initialized)
                if self.calibrated:
                    scale, zero_point = quantization_params(
                        quantizer.running_min,
                        quantizer.running_max,
                        quantizer.bits,
                        quantizer.symmetric,
                    )
                    self.register_buffer("input_scale", scale.reshape(()))
                    self.register_buffer("input_zero_point", zero_point.reshape(()))

        def _weight(self) -> torch.Tensor:
            if self.weight_symmetric is None:
                return self.layer.weight
            qmin, qmax = _onnx_range(self.weight_symmetric)
            dtype = _integer_dtype(self.weight_symmetric)
            ops = torch.ops.quantized_decomposed
            if self.weight_per_channel:
                return ops.dequantize_per_channel(
                    self.weight_int,
                    self.weight_scale,
                    self.weight_zero_point,
                    0,
                    qmin,
                    qmax,
                    dtype,
                )
            return ops.dequantize_per_tensor(
                self.weight_int,
                self.weight_scale_value,
                self.weight_zero_point_value,
                qmin,
                qmax,
                dtype,
            )

        def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
            quantizer = self.activation
            if self.calibrated:
                scale, zero_point = self.input_scale, self.input_zero_point
            else:  # never calibrated: the batch's own range, as winnow's eval mode does
                # (min and max, not aminmax: the ONNX translation of aminmax's amin needs dims)
                low, high = x.detach().min(), x.detach().max()
                scale, zero_point = quantization_params(
                    low, high, quantizer.bits, quantizer.symmetric
                )
            qmin, qmax = _integer_range(quantizer.bits, quantizer.symmetric)
            onnx_min, onnx_max = _onnx_range(quantizer.symmetric)
            if (qmin, qmax) != (onnx_min, onnx_max):  # winnow's range is narrower: clip to it
                x = torch.clamp(x, (qmin - zero_point) * scale, (qmax - zero_point) * scale)
            return fake_quantize(x, scale.reshape(()), zero_point.reshape(()), onnx_min, onnx_max)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.activation is not None:
                x = self._quantize_input(x)
            weight = self._weight()
            if isinstance(self.layer, nn.Conv2d):
                return self.layer._conv_forward(x, weight, self.layer.bias)
            return nn.functional.linear(x, weight, self.layer.bias)

    return QDQLayer


def export_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose quantized layers are :class:`QDQLayer` s:
    the same outputs in torch, and Q/DQ pairs when exported to ONNX."""
    from winnow.search_space.quantization import is_quantized, quantizable_layers

    ready = copy.deepcopy(model).eval()
    layer_class = _qdq_layer_class()
    for name, layer in quantizable_layers(ready):
        if not is_quantized(layer):
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = ready.get_submodule(parent_name) if parent_name else ready
        setattr(parent, attribute, layer_class(layer))
    return ready


# ------------------------------------------------------------------------------------- export


def build(
    candidate: Candidate,
    task: Task,
    seed: int,
    state_dict: dict[str, Any] | None = None,
) -> nn.Module:
    """winnow's own model of ``candidate`` for ``task`` in eval mode: seeded as the trial was
    (so without ``state_dict`` it is the trial's initialisation), then loaded from
    ``state_dict`` (the trial's trained weights) when given."""
    from winnow.search_space.training import seed_everything

    input_shape, num_classes = task.shape()
    seed_everything(seed)
    model = candidate.build_model(num_classes, input_shape)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def to_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``model`` (winnow's, quantized or not) as a checked ONNX model's bytes, batch dynamic."""
    require("onnx", "onnxscript")
    import onnx
    import torch

    ready = export_ready(model)
    example = torch.zeros((2, *input_shape))
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            ready,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            custom_translation_table={_fake_quantize_op_overload(): _q_dq},
            verbose=False,
        )
    data = program.model_proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    return data


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch's dynamo exporter warns on every export that torchvision's ops are not registered
    (winnow uses none) and that a pytree API is deprecated (torch's own use of it): four log
    lines and a warning per export in the server's log, none of them the user's to act on."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*treespec.*", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _readme(recipe: dict[str, Any], trained: bool) -> str:
    candidate = recipe["candidate"]
    quantization = candidate.get("quantization", {})
    weights = (
        "the trial's trained weights"
        if trained
        else "its seeded initialisation (the trial's seed; the trial's trained weights were "
        "not kept, so this model is untrained)"
    )
    return (
        f"# {FILE_NAME}\n\n"
        f"winnow search {recipe.get('search_id')} trial {recipe.get('trial_id')}: the "
        f"{candidate['architecture']['family']} network with {candidate['normalization']} "
        f"normalization, at {weights}. Input `input` (batch, "
        f"{', '.join(map(str, Task.model_validate(recipe['training']['task']).shape()[0]))}) "
        "float32, after the task's preprocessing; output `logits`.\n\n"
        f"Quantization: {quantization or 'none (float32)'}. Quantized weights are constant "
        "DequantizeLinear(int8/uint8, scale, zero point), per-axis where the policy is "
        "per-channel; each quantized layer's input is a QuantizeLinear/DequantizeLinear pair "
        "with the calibrated range.\n\n"
        "Numerical difference from winnow: symmetric policies use winnow's narrow range "
        "(-127..127 at 8 bits), which ONNX does not accept; they are exported as int8 "
        "(-128..127) with zero point 0 and winnow's scale, with a Clip to winnow's range "
        "before each activation's QuantizeLinear (also for affine policies under 8 bits). "
        "ONNX rounds x / scale where winnow rounds x * (1 / scale), which can move a value "
        "on a rounding tie by one step; without the Clip a symmetric activation beyond the "
        "calibrated range could reach -128 steps where winnow stops at -127. Float "
        "rounding differs between runtimes, and in a deep quantized network a value it moves "
        "across a rounding boundary is one step off and moves the layers after it: with ONNX "
        "Runtime's graph optimizations off (`GraphOptimizationLevel.ORT_DISABLE_ALL`) 298 of "
        "300 sampled winnow networks agreed with winnow within one output step, 283 with "
        "them on.\n"
    )


def files(recipe: dict[str, Any], state_dict: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The ``onnx`` bundle of a recipe: ``model.onnx`` and ``README.md``. ``state_dict``: the
    trial's trained weights, by default those the search kept for it (``weights.kept_path``);
    without any the model is the seeded initialisation, and the README says so."""
    require("onnx", "onnxscript")
    from winnow.search_space.candidate import Candidate

    if state_dict is None:
        state_dict = kept_state_dict(recipe)
    from winnow.service.export.errors import ExportError
    from winnow.service.export.weights import MAX_WEIGHTS_BYTES

    task = Task.model_validate(recipe["training"]["task"])
    model = build(Candidate(**recipe["candidate"]), task, recipe["training"]["seed"], state_dict)
    data = to_onnx(model, task.shape()[0])
    if len(data) > MAX_WEIGHTS_BYTES:  # one export reply carries the bundle
        raise ExportError(
            f"model.onnx is {len(data) / 2**20:.1f} MiB, more than one export reply carries "
            f"({MAX_WEIGHTS_BYTES / 2**20:.1f} MiB); export the pytorch bundle and run "
            "torch.onnx.export where it is"
        )
    return {FILE_NAME: data, "README.md": _readme(recipe, state_dict is not None).encode()}


def kept_state_dict(recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The trained weights the search kept for the recipe's trial, or None when it kept none."""
    import torch

    from winnow.service.export.weights import kept_bytes

    data = kept_bytes(recipe)  # None when not kept: the seeded initialisation, said so
    return None if data is None else torch.load(io.BytesIO(data), weights_only=True)


# ------------------------------------------------------------------------- checking the export


def run_onnx(data: bytes, inputs: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's output (CPU, graph optimizations off) for ``inputs``."""
    require("onnxruntime")
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # tests and benchmarks share the machine's cores
    # The graph as written: ORT's optimizations (constant folding, fusions) round the float ops
    # between the Q/DQ pairs differently, which flips a few quantized values; that took 3 of
    # the first 60 of `winnow bench export`'s sample past one output step (none without them).
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": inputs.numpy()})
    return torch.from_numpy(output)


def output_step(model: nn.Module, inputs: torch.Tensor) -> float:
    """One quantization step of ``model``'s output on ``inputs``: the scale its logits would get
    from the model's activation quantization (their own range, at the activation bits and
    symmetry of the policy). 0 for a model without activation quantization, whose quantized
    weights ONNX holds exactly (only float rounding differs)."""
    import torch

    from winnow.search_space.quantization import (
        activation_quantizer,
        quantizable_layers,
        quantization_params,
    )

    quantizers = [activation_quantizer(m) for _, m in quantizable_layers(model)]
    quantizers = [q for q in quantizers if q is not None]
    if not quantizers:
        return 0.0
    with torch.no_grad():
        logits = model(inputs)
    bits, symmetric = quantizers[-1].bits, quantizers[-1].symmetric
    scale, _ = quantization_params(logits.min(), logits.max(), bits, symmetric)
    return float(scale)


def onnx_max_abs_diff(
    candidate: Candidate,
    task: Task,
    seed: int = 0,
    state_dict: dict[str, Any] | None = None,
    batch: int = 16,
) -> tuple[float, float]:
    """(max |ONNX Runtime - winnow's torch model|, the output's quantization step) for
    ``candidate`` on ``batch`` standard-normal inputs, in eval mode. The step is 0 for models
    without activation quantization, whose tolerance is float rounding. For ``winnow bench
    export`` and the tests; raises whatever the export raises."""
    import torch

    model = build(candidate, task, seed, state_dict)
    input_shape = task.shape()[0]
    inputs = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(inputs)
    got = run_onnx(to_onnx(model, input_shape), inputs)
    return float((got - expected).abs().max()), output_step(model, inputs)
