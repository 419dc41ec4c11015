"""The proxy registry and :func:`score_model`, which scores one network with many proxies.

Time rule (``ProxyScore.seconds``): a proxy's seconds are the time of its own work (turning the
passes into a number, or all of a standalone proxy) plus, for every shared need it reads (the
forward, and each of its ``needs``), that need's time divided by the number of proxies in this
call that read it (:func:`charged_passes`: LGA, whose NTK forwards images of its own, shares the
forward only when no proxy that reads it is scored). Work done inside a shared pass for one need
only (NASWOT's codes in the forward, Fisher's reduction in the backward) is that need's time, not
the pass's. So the seconds of one call add up to its wall time (up to bookkeeping), whichever
mode it ran in.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence

from torch import nn

from winnow.proxies import activation, gradient, meco, ntk
from winnow.proxies.base import Batch, ProxyEntry, ProxyScore
from winnow.proxies.passes import (
    FORWARD,
    OWN_PASSES,
    PassPlan,
    SharedPasses,
    run_shared_passes,
)
from winnow.proxies.swap import swap
from winnow.proxies.synflow import synflow
from winnow.proxies.zen import zen
from winnow.search_space.costs import count_flops, count_parameters
from winnow.search_space.registry import Registry
from winnow.search_space.training import synchronize

# --- the proxies, from the shared passes -------------------------------------------------------


def _snip(p: SharedPasses) -> float:
    p.require("loss_grads")
    return gradient.snip(p.weights, p.grads)


def _grasp(p: SharedPasses) -> float:
    p.require("loss_grads", "hessian")
    return gradient.grasp(p.weights, p.hessian_grads)


def _fisher(p: SharedPasses) -> float:
    p.require("loss_grads", "outputs")
    return gradient.fisher(p.channel_fisher, p.weights)


def _grad_norm(p: SharedPasses) -> float:
    p.require("loss_grads")
    return gradient.grad_norm(p.grads)


def _jacob_cov(p: SharedPasses) -> float:
    p.require("input_grad")
    return activation.jacob_cov(p.input_grad)


def _naswot(p: SharedPasses) -> float:
    p.require("codes")
    if p.kernel is None:
        raise ValueError("naswot found no activation layer (ReLU, GELU, SiLU, ...) in the model")
    return activation.naswot(p.kernel)


def _zico(p: SharedPasses) -> float:
    p.require("loss_grads", "second_batch")
    return gradient.zico([p.grads, p.second_grads])


def _meco(p: SharedPasses) -> float:
    p.require("meco")
    return meco.meco(p.meco_terms)


def _lga(p: SharedPasses) -> float:
    p.require("ntk")
    return ntk.lga(p.ntk, p.labels)


def _az(score: str) -> Callable[[SharedPasses], float]:
    def from_passes(p: SharedPasses) -> float:
        p.require("aznas")
        return getattr(p.aznas, score)

    return from_passes


def _params(model: nn.Module, batches: Sequence[Batch], seed: int) -> float:
    return float(count_parameters(model))


def _flops(model: nn.Module, batches: Sequence[Batch], seed: int) -> float:
    return float(count_flops(model, tuple(batches[0][0].shape[1:])))


_FORESIGHT = "Abdelfattah et al. 2021, Zero-Cost Proxies for Lightweight NAS (ICLR)"
_AZNAS = "Lee & Ham 2024, AZ-NAS (CVPR)"

PROXIES: Registry[ProxyEntry] = Registry("proxy")
for _entry in (
    ProxyEntry("synflow", "Tanaka et al. 2020 (NeurIPS); " + _FORESIGHT, standalone=synflow),
    ProxyEntry("snip", "Lee et al. 2019 (ICLR)", frozenset({"loss_grads"}), _snip),
    ProxyEntry(
        "grasp",
        "Wang et al. 2020 (ICLR); " + _FORESIGHT,
        frozenset({"loss_grads", "hessian"}),
        _grasp,
    ),
    ProxyEntry(
        "fisher",
        "Turner et al. 2020 (ICLR); Theis et al. 2018",
        frozenset({"loss_grads", "outputs"}),
        _fisher,
    ),
    ProxyEntry("grad_norm", _FORESIGHT, frozenset({"loss_grads"}), _grad_norm),
    ProxyEntry("jacob_cov", "Mellor et al. 2020 (arXiv v1)", frozenset({"input_grad"}), _jacob_cov),
    ProxyEntry("naswot", "Mellor et al. 2021 (ICML)", frozenset({"codes"}), _naswot),
    ProxyEntry("zen", "Lin et al. 2021, Zen-NAS (ICCV)", standalone=zen),
    ProxyEntry(
        "zico", "Li et al. 2023, ZiCo (ICLR)", frozenset({"loss_grads", "second_batch"}), _zico
    ),
    ProxyEntry("params", "parameter count (a baseline)", standalone=_params),
    ProxyEntry("flops", "FLOPs per sample (a baseline; AZ-NAS's complexity)", standalone=_flops),
    ProxyEntry("lga", "Mok et al. 2022, Demystifying the NTK (CVPR)", frozenset({"ntk"}), _lga),
    ProxyEntry("az_expressivity", _AZNAS, frozenset({"aznas"}), _az("expressivity")),
    ProxyEntry("az_progressivity", _AZNAS, frozenset({"aznas"}), _az("progressivity")),
    ProxyEntry("az_trainability", _AZNAS, frozenset({"aznas"}), _az("trainability")),
    ProxyEntry("meco", "Jiang et al. 2023, MeCo (NeurIPS)", frozenset({"meco"}), _meco),
    ProxyEntry("swap", "Peng et al. 2024, SWAP-NAS (ICLR)", standalone=swap),
):
    PROXIES.register(_entry.name, _entry)


def proxy_names() -> list[str]:
    """Names of the registered proxies, in registration order."""
    return PROXIES.names()


# --- scoring -------------------------------------------------------------------------------------


def _timed(compute: Callable[[], float], device, extra_seconds: float = 0.0) -> ProxyScore:
    """Run one proxy's own work: its value (None with the error when it raises or is not
    finite) and its seconds plus ``extra_seconds`` of shared work."""
    start = time.perf_counter()
    value, error = None, None
    try:
        value = float(compute())
    except Exception as exc:  # one proxy failing must not stop the others
        error = f"{type(exc).__name__}: {exc}"
    synchronize(device)
    seconds = time.perf_counter() - start + extra_seconds
    if value is not None and not math.isfinite(value):
        value, error = None, f"non-finite score ({value})"
    return ProxyScore(value, seconds, error)


# Needs whose pass runs after batch 0's forward (on the copy it left) but forwards inputs of its
# own and reads nothing of that forward's graph: the NTK.
_AFTER_FORWARD = frozenset({"ntk"})


def charged_passes(entries: Sequence[ProxyEntry]) -> dict[str, set[str]]:
    """The passes whose time each proxy shares: its own needs, and batch 0's forward if it reads
    that forward, or if it only runs after it (LGA) and no proxy asked for reads it."""
    own = {e.name: set(e.needs) for e in entries}
    reading = {n for n, needs in own.items() if needs - OWN_PASSES - _AFTER_FORWARD}
    for name, needs in own.items():
        if name in reading or (not reading and needs - OWN_PASSES):
            needs.add(FORWARD)
    return own


def _score_shared(
    model: nn.Module, batches: Sequence[Batch], entries: Sequence[ProxyEntry], seed: int
) -> dict[str, ProxyScore]:
    """Score ``entries`` from one set of shared passes (see the module docstring for time)."""
    plan = PassPlan.of(set().union(*(e.needs for e in entries)))
    shared = run_shared_passes(model, batches, plan, seed)
    reads = charged_passes(entries)
    readers = Counter(need for needs in reads.values() for need in needs)
    scores = {}
    for entry in entries:
        share = sum(shared.seconds.get(n, 0.0) / readers[n] for n in reads[entry.name])
        scores[entry.name] = _timed(lambda e=entry: e.from_passes(shared), shared.device, share)
    return scores


def _resolve(proxies: Sequence[str] | str | None) -> list[str]:
    if proxies is None:
        return proxy_names()
    names = [proxies] if isinstance(proxies, str) else list(proxies)
    for name in names:
        PROXIES.get(name)  # unknown names fail here, listing the known ones
    return list(dict.fromkeys(names))


def score_model(
    model: nn.Module,
    batches: Sequence[Batch],
    proxies: Sequence[str] | None = None,
    *,
    share: bool = True,
    seed: int = 0,
) -> dict[str, ProxyScore]:
    """Score ``model`` (freshly built, at initialisation) with ``proxies`` (default: all), keyed
    by name in the order asked.

    ``batches`` are real ``(x, y)`` batches on the device to score on: batch 0 feeds every
    data-dependent proxy, batch 1 zico's second gradient (zico fails without it). The model is
    never changed: proxies work on copies (``params`` and ``flops`` only read it).

    ``share=True`` runs the data-dependent proxies (snip, grasp, fisher, grad_norm, jacob_cov,
    naswot, zico, lga, meco) and AZ-NAS's three from one set of passes
    (``winnow.proxies.passes``); ``share=False`` gives each its own copy and passes, as the
    reference code does. Both give the same values. synflow, zen, swap, params and flops always
    run alone. ``seed`` seeds the Gaussian weights and inputs of zen, swap and AZ-NAS's pass;
    nothing else is random. A failing proxy (or a failing shared pass, for the proxies
    reading it) gives ``value=None`` with its ``error``; the others are still scored.
    """
    names = _resolve(proxies)
    if not batches:
        raise ValueError("score_model needs at least one (x, y) batch")
    entries = [PROXIES.get(name) for name in names]
    shared_entries = [e for e in entries if e.shared]
    groups = [shared_entries] if share else [[e] for e in shared_entries]
    scores: dict[str, ProxyScore] = {}
    for group in groups:
        if group:
            scores.update(_score_shared(model, batches, group, seed))
    device = batches[0][0].device
    for entry in entries:
        if not entry.shared:
            scores[entry.name] = _timed(lambda e=entry: e.standalone(model, batches, seed), device)
    return {name: scores[name] for name in names}
