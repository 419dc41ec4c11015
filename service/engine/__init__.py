"""The search engine: the loop (``engine``), the cascade's stages (``cascade``) and the engine's
evidence behind them (``evidence``), how candidates are settled (``outcomes``), training rungs
(``training``, ``rungs``), what it writes (``journal``), the state rebuilt from records
(``state``), samplers (``sampling``), the proxy screen, Pareto arithmetic and the readout
(``readout``: progress, front, hypervolume, recipes).

``Engine`` and ``SearchReport`` load on first use, so that the readout and Pareto modules (which
the dashboard reads through) do not pull in the engine's machinery.
"""

from typing import Any

__all__ = ["Engine", "SearchReport"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from winnow.service.engine import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'winnow.service.engine' has no attribute {name!r}")
