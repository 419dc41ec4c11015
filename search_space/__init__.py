"""Search spaces: the spec language, candidates, builders, datasets and the training loop.

Public surface::

    from winnow.search_space import SearchSpace, Candidate, load_space, parse_space
    space = load_space("examples/digits.yaml")
    candidate = space.sample(1, seed=0)[0]
    model = candidate.build_model(num_classes=10, input_shape=(1, 8, 8))
"""

from winnow.search_space.candidate import Candidate
from winnow.search_space.spec import SearchSpace, SpecError, load_space, parse_space
from winnow.search_space.trial import Fidelity, Status, TrialResult, TrialSpec

__all__ = [
    "Candidate",
    "Fidelity",
    "SearchSpace",
    "SpecError",
    "Status",
    "TrialResult",
    "TrialSpec",
    "load_space",
    "parse_space",
]
