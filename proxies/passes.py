"""The forward and backward passes that data-dependent proxies share.

Every proxy of foresight (Abdelfattah et al. 2021) runs its own forward and backward on its own
copy of the network. Most of them read the same few quantities of one batch, so one set of
passes can feed them all (:func:`run_shared_passes`):

1. ``forward``: one training-mode forward of batch 0 on a copy of the model, with hooks that
   collect NASWOT's activation codes (``codes``) and keep every Conv2d/Linear output for Fisher
   (``outputs``); the input requires grad when jacob_cov is asked for.
2. ``input_grad``: the gradient of the summed output with respect to the input (jacob_cov).
3. ``loss_grads``: one cross-entropy backward for the weight gradients (snip, grad_norm, grasp,
   zico's first batch) and the gradients of the kept layer outputs (fisher), with
   ``create_graph`` when GraSP needs to differentiate them again.
4. ``hessian``: GraSP's Hessian-gradient product, a backward of ``z = sum(stop_grad(g) * g)``.
5. ``second_batch``: a forward and backward of batch 1 for zico's second gradient.
6. ``meco``: work inside the forward, MeCo's term of every module output (hooks).
7. ``ntk``: the empirical NTK of the first images of batch 0, a forward and per-image backwards
   of their own on the same copy (LGA; ``winnow.proxies.ntk``), the copy's buffers put back
   afterwards so that the passes after it see the copy as batch 0 left it.
8. ``aznas``: AZ-NAS's pass of its own (another initialisation, Gaussian input), read by its
   three proxies; it runs whatever the forward did.

A :class:`PassPlan` says which of these run; scoring one proxy alone is the plan of its own
needs, so the shared and the separate computations are the same code and give the same values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from winnow.proxies.activation import naswot_kernel
from winnow.proxies.aznas import AZScores, az_scores
from winnow.proxies.base import (
    ACTIVATION_MODULES,
    Batch,
    inside_parametrization,
    prunable_layers,
    weight_of,
    working_copy,
)
from winnow.proxies.gradient import channel_fisher
from winnow.proxies.meco import meco_term
from winnow.proxies.ntk import LGA_SAMPLES, batch_ntk
from winnow.search_space.training import synchronize

FORWARD = "forward"
# Needs whose pass works on its own copy and inputs: a plan of these alone runs no forward.
OWN_PASSES = frozenset({"aznas"})


@dataclass(frozen=True)
class PassPlan:
    """Which shared work runs. Each field is a *need* a proxy can name (see ``ProxyEntry``):
    ``codes`` and ``outputs`` is work inside the forward, the others are passes of their own.
    Every plan runs the forward."""

    codes: bool = False
    outputs: bool = False
    input_grad: bool = False
    loss_grads: bool = False
    hessian: bool = False
    second_batch: bool = False
    meco: bool = False
    ntk: bool = False
    aznas: bool = False

    @classmethod
    def of(cls, needs: Iterable[str]) -> PassPlan:
        needs = set(needs)
        known = {f.name for f in fields(cls)}
        if needs - known:
            raise ValueError(f"unknown needs {sorted(needs - known)}; allowed: {sorted(known)}")
        if needs & {"outputs", "hessian", "second_batch"} and "loss_grads" not in needs:
            raise ValueError("outputs, hessian and second_batch are read with loss_grads")
        return cls(**dict.fromkeys(needs, True))

    @property
    def forward(self) -> bool:
        """Whether batch 0 goes through the working copy (every need but ``OWN_PASSES``)."""
        own = {f.name for f in fields(self) if getattr(self, f.name)} - OWN_PASSES
        return bool(own) or not any(getattr(self, n) for n in OWN_PASSES)


class SharedPassError(RuntimeError):
    """A proxy read the result of a shared pass that failed."""


@dataclass
class SharedPasses:
    """What the shared passes produced; lists hold one tensor per prunable layer.

    ``seconds`` holds the time of each need (``forward`` included); time spent inside a pass on
    one need (``codes`` in the forward, ``outputs`` in the loss backward) is charged to that need,
    not to the pass. ``errors`` holds the failure of each need that failed.
    """

    device: torch.device
    weights: list[Tensor] = field(default_factory=list)
    kernel: Tensor | None = None  # NASWOT kernel, summed over activation layers
    input_grad: Tensor | None = None
    grads: list[Tensor] | None = None  # batch 0 weight gradients of the cross-entropy
    channel_fisher: list[Tensor] | None = None
    hessian_grads: list[Tensor] | None = None
    second_grads: list[Tensor] | None = None
    meco_terms: list[Tensor] = field(default_factory=list)
    ntk: Tensor | None = None
    labels: Tensor | None = None  # batch 0's labels (LGA)
    aznas: AZScores | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    _charged: float = field(default=0.0, init=False, repr=False)  # see charge()

    def require(self, *needs: str) -> None:
        """Raise :class:`SharedPassError` if one of ``needs`` failed, or the forward (unless
        ``needs`` are all ``OWN_PASSES``)."""
        reads_forward = bool(set(needs) - OWN_PASSES)
        for need in ((FORWARD,) if reads_forward else ()) + needs:
            if need in self.errors:
                raise SharedPassError(f"shared {need} pass failed: {self.errors[need]}")

    def run(self, need: str, step: Callable[[], Any], after: Sequence[str] = ()) -> Any:
        """Run one pass, timed; record its failure instead of raising. Skipped (and failed)
        when a pass it builds on failed."""
        failed = [n for n in after if n in self.errors]
        if failed:
            self.errors[need] = f"skipped: the {failed[0]} pass failed"
            return None
        start, charged_before = time.perf_counter(), self._charged
        try:
            return step()
        except Exception as error:  # recorded for the proxies that read this pass
            self.errors[need] = f"{type(error).__name__}: {error}"
            return None
        finally:
            synchronize(self.device)
            inner = self._charged - charged_before
            elapsed = time.perf_counter() - start - inner
            self.seconds[need] = self.seconds.get(need, 0.0) + elapsed

    @contextmanager
    def charge(self, need: str) -> Iterator[None]:
        """Charge the time of the enclosed work, done inside some pass, to ``need``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[need] = self.seconds.get(need, 0.0) + elapsed
            self._charged += elapsed


@dataclass
class _Graph:
    """Batch 0 through the network: input, labels, logits, kept layer outputs."""

    x: Tensor
    y: Tensor
    logits: Tensor
    outputs: list[tuple[int, Tensor, bool]]  # (layer index, output, channels last) per call


def _hook_codes(model: nn.Module, shared: SharedPasses) -> list[Any]:
    """Forward hooks adding each activation layer's NASWOT kernel (codes: input > 0)."""

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if "codes" in shared.errors:
            return
        with shared.charge("codes"):
            try:
                kernel = naswot_kernel(inputs[0].detach().flatten(1) > 0)
            except Exception as error:  # NASWOT fails; the forward goes on for the others
                shared.errors["codes"] = f"{type(error).__name__}: {error}"
                return
            shared.kernel = kernel if shared.kernel is None else shared.kernel + kernel

    return [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ACTIVATION_MODULES)
    ]


def _hook_meco(model: nn.Module, shared: SharedPasses) -> list[Any]:
    """Forward hooks adding MeCo's term of every module's output (``winnow.proxies.meco``)."""

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        if "meco" in shared.errors or not isinstance(output, Tensor) or output.dim() == 0:
            return
        with shared.charge("meco"):
            try:
                term = meco_term(output)
            except Exception as error:  # MeCo fails; the forward goes on for the others
                shared.errors["meco"] = f"{type(error).__name__}: {error}"
                return
            if term is not None:
                shared.meco_terms.append(term)

    return [
        m.register_forward_hook(hook)
        for name, m in model.named_modules()
        if not inside_parametrization(name)
    ]


def _hook_outputs(layers: list[nn.Module], outputs: list[tuple[int, Tensor, bool]]) -> list[Any]:
    """Forward hooks keeping every output of the prunable layers (foresight puts an identity
    after each layer and hooks its backward; asking autograd for the gradients of these
    tensors is the same)."""

    def hook_for(index: int):
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            # A Linear on (N, ..., K) inputs has its output channels last.
            outputs.append((index, output, isinstance(module, nn.Linear)))

        return hook

    return [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]


def _forward(work: nn.Module, batch: Batch, plan: PassPlan, shared: SharedPasses) -> _Graph:
    x, y = batch
    x = x.detach().to(shared.device, torch.float32).requires_grad_(plan.input_grad)
    outputs: list[tuple[int, Tensor, bool]] = []
    handles = _hook_codes(work, shared) if plan.codes else []
    if plan.meco:
        handles += _hook_meco(work, shared)
    if plan.outputs:
        handles += _hook_outputs(prunable_layers(work), outputs)
    try:
        logits = work(x)
    finally:
        for handle in handles:
            handle.remove()
    return _Graph(x, y.to(shared.device), logits, outputs)


def _input_gradient(graph: _Graph, retain_graph: bool) -> Tensor:
    """Gradient of the summed output w.r.t. each input (foresight: ``y.backward(ones)``)."""
    (grad,) = torch.autograd.grad(graph.logits.sum(), graph.x, retain_graph=retain_graph)
    return grad.detach()


def _or_zeros(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    """Gradients of tensors the loss does not reach are None for autograd, zeros for us."""
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like, strict=True)]


def _fisher_per_layer(
    graph: _Graph, activation_grads: Sequence[Tensor | None], weights: list[Tensor]
) -> list[Tensor]:
    """Per-channel Fisher information of each layer, summed over the layer's calls."""
    per_layer = [torch.zeros(w.shape[0], dtype=torch.float64, device=w.device) for w in weights]
    for (index, activation, channels_last), grad in zip(
        graph.outputs, activation_grads, strict=True
    ):
        if grad is None:
            continue
        if channels_last:  # foresight reads channels on dim 1
            activation, grad = activation.movedim(-1, 1), grad.movedim(-1, 1)
        per_layer[index] += channel_fisher(activation, grad)
    return per_layer


def _loss_gradients(graph: _Graph, plan: PassPlan, shared: SharedPasses) -> list[Tensor]:
    """Cross-entropy gradients of the weights (and of the kept outputs, reduced to Fisher at
    once so they are not held). Returns the weight gradients still attached to their graph
    when GraSP needs them (``create_graph``)."""
    loss = F.cross_entropy(graph.logits, graph.y)
    activations = [a for _, a, _ in graph.outputs]
    grads = torch.autograd.grad(
        loss, [*shared.weights, *activations], create_graph=plan.hessian, allow_unused=True
    )
    weight_grads = _or_zeros(grads[: len(shared.weights)], shared.weights)
    shared.grads = [g.detach() for g in weight_grads]
    if plan.outputs:
        with shared.charge("outputs"):
            try:
                activation_grads = grads[len(shared.weights) :]
                shared.channel_fisher = _fisher_per_layer(graph, activation_grads, shared.weights)
            except Exception as error:  # Fisher fails; the weight gradients stand
                shared.errors["outputs"] = f"{type(error).__name__}: {error}"
    graph.outputs.clear()
    return weight_grads


def _hessian_gradients(weights: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
    """``Hg``: the gradient of ``z = sum(stop_grad(g) * g)`` (foresight's GraSP)."""
    terms = [(g.detach() * g).sum() for g in grads if g.requires_grad]
    if not terms:  # the gradient does not depend on the weights: H g = 0
        return [torch.zeros_like(w) for w in weights]
    hessian_grads = torch.autograd.grad(torch.stack(terms).sum(), weights, allow_unused=True)
    return [g.detach() for g in _or_zeros(hessian_grads, weights)]


def _second_batch_gradients(
    work: nn.Module, batches: Sequence[Batch], shared: SharedPasses
) -> list[Tensor]:
    """Weight gradients of the cross-entropy of batch 1, on the copy that batch 0 went through
    (as ZiCo's code runs its batches one after the other on one network)."""
    if len(batches) < 2:
        raise ValueError("zico needs a second batch; got one")
    x, y = batches[1]
    logits = work(x.detach().to(shared.device, torch.float32))
    loss = F.cross_entropy(logits, y.to(shared.device))
    grads = torch.autograd.grad(loss, shared.weights, allow_unused=True)
    return [g.detach() for g in _or_zeros(grads, shared.weights)]


def _first_batch(
    work: nn.Module, batches: Sequence[Batch], plan: PassPlan, shared: SharedPasses
) -> None:
    """The batch-0 passes; the graph is freed when this returns."""
    graph = shared.run(FORWARD, lambda: _forward(work, batches[0], plan, shared))
    if plan.input_grad:
        shared.input_grad = shared.run(
            "input_grad", lambda: _input_gradient(graph, plan.loss_grads), after=[FORWARD]
        )
    if plan.loss_grads:
        grads = shared.run("loss_grads", lambda: _loss_gradients(graph, plan, shared), [FORWARD])
        if plan.outputs and "loss_grads" in shared.errors:
            shared.errors["outputs"] = shared.errors["loss_grads"]
    if plan.hessian:
        shared.hessian_grads = shared.run(
            "hessian", lambda: _hessian_gradients(shared.weights, grads), after=["loss_grads"]
        )


def _ntk_pass(work: nn.Module, batches: Sequence[Batch], shared: SharedPasses) -> None:
    """LGA's NTK (the ``ntk`` need), from a training-mode forward of its own on ``work``."""
    x, y = batches[0]
    shared.labels = y[:LGA_SAMPLES].to(shared.device)
    x = x.detach().to(shared.device, torch.float32)
    shared.ntk = shared.run("ntk", lambda: _ntk_keeping_buffers(work, x), after=[FORWARD])


def _ntk_keeping_buffers(work: nn.Module, x: Tensor) -> Tensor:
    """:func:`batch_ntk`, with ``work``'s buffers put back afterwards: its forward moves what a
    training forward sets (BatchNorm's running statistics, the activation quantizers' ranges),
    and zico's batch 1 must see the copy as batch 0 left it, whether lga is scored or not."""
    saved = {name: b.detach().clone() for name, b in work.named_buffers()}
    try:
        return batch_ntk(work, x)
    finally:
        with torch.no_grad():
            for name, buffer in work.named_buffers():
                buffer.copy_(saved[name])


def run_shared_passes(
    model: nn.Module, batches: Sequence[Batch], plan: PassPlan, seed: int = 0
) -> SharedPasses:
    """Run the passes of ``plan`` on a working copy of ``model`` (training mode, float32, on the
    device of ``batches[0]``); failures are recorded in ``errors``, never raised. ``seed`` seeds
    the ``aznas`` pass (its initialisation, input and directions); nothing else is random."""
    device = batches[0][0].device
    shared = SharedPasses(device)
    if plan.aznas:
        shared.aznas = shared.run("aznas", lambda: az_scores(model, batches[0][0], seed))
    if not plan.forward:
        return shared
    work = shared.run(FORWARD, lambda: working_copy(model, device))
    if work is None:
        return shared
    shared.weights = [weight_of(layer) for layer in prunable_layers(work)]
    with torch.enable_grad():
        _first_batch(work, batches, plan, shared)
        if plan.ntk:
            _ntk_pass(work, batches, shared)
        if plan.second_batch:
            shared.second_grads = shared.run(
                "second_batch",
                lambda: _second_batch_gradients(work, batches, shared),
                after=[FORWARD],
            )
    return shared
