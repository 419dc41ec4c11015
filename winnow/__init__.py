"""winnow: search for training recipes (architecture x normalization x optimizer x quantization).

The code lives in the design card's folders at the repository root (``search_space/``,
``proxies/``, ``service/`` ...), installed as subpackages of this one (see ``pyproject.toml``).

``from winnow import Client, SearchSpec`` is the client SDK (``winnow.service.client``); the
names load on first use, so importing a subpackage does not pull in gRPC. ``__version__`` is the
installed distribution's (pyproject.toml is the one place the version is written).
"""

from typing import Any

_LAZY = {
    "Client": "winnow.service.client",
    "Search": "winnow.service.client",
    "WinnowError": "winnow.service.client",
    "SearchSpec": "winnow.service.search_spec",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("winnow")
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'winnow' has no attribute {name!r}")
