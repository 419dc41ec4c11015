"""winnow: search for training recipes (architecture x normalization x optimizer x quantization).

The code lives in the design card's folders at the repository root (``search_space/``,
``proxies/``, ``service/`` ...), installed as subpackages of this one (see ``pyproject.toml``).
"""

__version__ = "0.1.0"
