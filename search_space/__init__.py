"""Search spaces: the spec language, candidates, builders, datasets and the training loop.

Public surface::

    from winnow.search_space import SearchSpace, Candidate, load_space, parse_space
    space = load_space("examples/digits.yaml")
    candidate = space.sample(1, seed=0)[0]
    model = candidate.build_model(num_classes=10, input_shape=(1, 8, 8))

The names load on first use (as in ``winnow/__init__.py``), so that the torch-free modules
(``registry``, ``specfile``, ``builtin_spaces``) import without torch: the client SDK uses them.
"""

from typing import Any

_LAZY = {
    "Candidate": "winnow.search_space.candidate",
    "Fidelity": "winnow.records",
    "SearchSpace": "winnow.search_space.spec",
    "SpecError": "winnow.search_space.specfile",
    "Status": "winnow.records",
    "TrialResult": "winnow.search_space.trial",
    "TrialSpec": "winnow.search_space.trial",
    "load_space": "winnow.search_space.spec",
    "parse_space": "winnow.search_space.spec",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'winnow.search_space' has no attribute {name!r}")
