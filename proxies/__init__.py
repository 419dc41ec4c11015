"""Zero-cost proxies: scores of a network at initialisation, in seconds, that predict how well
it will train, so the engine can skip bad candidates before training them.

Public surface::

    from winnow.proxies import score_model, proxy_names
    scores = score_model(model, [(x0, y0), (x1, y1)])      # {name: ProxyScore}
    scores["synflow"].value, scores["synflow"].seconds

Proxies (``PROXIES``; each docstring gives its definition and paper): synflow, snip, grasp,
fisher, grad_norm, jacob_cov, naswot, zen, zico, the baselines params and flops, and (issue 22)
lga, AZ-NAS's az_expressivity, az_progressivity and az_trainability, meco and swap.
Modules: ``base`` (score type, registry entry, layers scored), ``gradient``, ``activation``,
``ntk`` (LGA) and ``meco`` (the formulas), ``synflow``, ``zen``, ``swap`` and ``aznas`` (proxies
with passes of their own), ``passes`` (the forward/backward passes the others share) and
``suite`` (the registry and ``score_model``); ``ensemble`` combines them.
"""

from winnow.proxies.base import ProxyEntry, ProxyScore
from winnow.proxies.passes import SharedPassError
from winnow.proxies.suite import PROXIES, proxy_names, score_model

__all__ = [
    "PROXIES",
    "ProxyEntry",
    "ProxyScore",
    "SharedPassError",
    "proxy_names",
    "score_model",
]
