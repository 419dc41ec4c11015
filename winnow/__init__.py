"""winnow: search for training recipes (architecture x normalization x optimizer x quantization).

The code lives in the design card's folders at the repository root (``search_space/``,
``proxies/``, ``service/`` ...), installed as subpackages of this one (see ``pyproject.toml``).

``from winnow import Client, SearchSpec`` is the client SDK (``winnow.service.client``); the
names load on first use, so importing a subpackage does not pull in gRPC.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "winnow.service.client",
    "Search": "winnow.service.client",
    "WinnowError": "winnow.service.client",
    "SearchSpec": "winnow.service.search_spec",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'winnow' has no attribute {name!r}")
