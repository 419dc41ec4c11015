"""Searchable parameters and the choosers that decide them.

A spec field that can be searched is a ``Param``: a scalar (fixed), a list (categorical choice),
or a range (``{low, high, log, step}``). A search space decides every Param of a candidate
through a ``Chooser``, so one ``suggest`` function per axis serves four purposes:

- ``RandomChooser``: seeded random sampling;
- ``OptunaChooser``: Optuna's define-by-run ``trial.suggest_*`` (the engine's samplers);
- ``ReplayChooser``: re-deciding a known candidate, which validates it against the space and
  yields its Optuna params;
- ``ParamsChooser``: rebuilding a candidate from Optuna params.

Every decision has an Optuna ``name`` and a ``path`` (the dotted place of the value in the
candidate's flat form). They are equal except where a name must say more than the path, e.g.
``optimizer.sgd.lr`` (so that samplers model each optimizer's learning rate apart) at path
``optimizer.lr``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import optuna.distributions as od
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    model_validator,
)

from winnow.search_space.numbers import FiniteFloat


class FloatRange(BaseModel):
    """A float in [low, high], log-uniform when ``log``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: FiniteFloat
    high: FiniteFloat
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class IntRange(BaseModel):
    """An integer in [low, high] with ``step``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.step < 1 or (self.log and self.step != 1):
            raise ValueError("step must be >= 1 (and 1 for a log range)")
        return self


def to_param(raw: Any) -> Any:
    """Parse a spec value: a range dict, a non-empty list of scalars, or a scalar."""
    if isinstance(raw, FloatRange | IntRange):
        return raw
    if isinstance(raw, dict):
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(raw):
            raise ValueError(f"a range takes low, high and optionally log, step; got {sorted(raw)}")
        ints = all(
            isinstance(raw[k], int) and not isinstance(raw[k], bool) for k in ("low", "high")
        )
        try:
            return (IntRange if ints or "step" in raw else FloatRange).model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"]))
            message = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"{where}: {message}" if where else message) from None
    if isinstance(raw, list | tuple):
        if not raw or not all(isinstance(v, bool | int | float | str) for v in raw):
            raise ValueError(f"a choice is a non-empty list of plain values, got {raw!r}")
        return [_finite(v) for v in raw]
    if isinstance(raw, bool | int | float | str):
        return _finite(raw)
    raise ValueError(f"expected a value, a list of values or a range {{low, high}}, got {raw!r}")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"values must be finite numbers, got {value}")
    return value


# A searchable spec field; see the module docstring.
Param = Annotated[Any, BeforeValidator(to_param)]


@dataclass(frozen=True)
class Within:
    """Bounds on every number a Param can take (each choice, a range's ends); the spec
    reference (``winnow.service.spec_docs``) shows them."""

    low: float
    high: float

    def __call__(self, param: Any) -> Any:
        values = [param.low, param.high] if isinstance(param, FloatRange | IntRange) else param
        numbers = [v for v in param_values(values) or [] if _is_number(v)]
        outside = [v for v in numbers if not self.low <= v <= self.high]
        if outside:
            raise ValueError(f"{outside[0]} is outside [{self.low:g}, {self.high:g}]")
        return param


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def bounded(annotation: Any, low: float, high: float) -> Any:
    """``annotation`` (a Param, a number, a list of numbers) whose numbers lie in
    ``[low, high]``; the spec reference shows the bounds."""
    within = Within(low, high)
    return Annotated[annotation, AfterValidator(within), within]


def bounded_param(low: float, high: float) -> Any:
    """A Param whose numbers lie in ``[low, high]`` (a width, a depth, a batch size)."""
    return bounded(Param, low, high)


# The limits of a space's sizes: far past any network a search trains, and a spec past them
# is a typo (a 3,000-layer MLP would build for minutes before failing for memory). Channel
# counts are widths; a macro network has at most MAX_STAGES stages, each stride at most
# MAX_STRIDE.
MAX_DEPTH, MAX_WIDTH, MAX_BATCH_SIZE, MAX_EPOCHS = 64, 16384, 65536, 10_000
MAX_STAGES, MAX_STRIDE, MAX_RESOLUTION, MAX_WIDTH_MULT = 8, 4, 4096, 8.0
Depth = bounded_param(1, MAX_DEPTH)
Width = bounded_param(1, MAX_WIDTH)
BatchSize = bounded_param(1, MAX_BATCH_SIZE)
Epochs = bounded_param(0, MAX_EPOCHS)
Probability = bounded_param(0, 1)
Channels = bounded(list[int], 1, MAX_WIDTH)  # one count per stage
Strides = bounded(list[int], 1, MAX_STRIDE)
Resolution = bounded(Param | None, 1, MAX_RESOLUTION)  # pixels of a side
WidthMult = bounded_param(1 / 64, MAX_WIDTH_MULT)


def param_values(param: Any) -> list[Any] | None:
    """The finite set of values a Param can take, or None for a range."""
    if isinstance(param, FloatRange | IntRange):
        return None
    return list(param) if isinstance(param, list) else [param]


def is_fixed(param: Any) -> bool:
    values = param_values(param)
    return values is not None and len(values) == 1


class Chooser(Protocol):
    """Decides one value per named decision (see the module docstring)."""

    def categorical(self, name: str, choices: Sequence[Any], path: str) -> Any: ...
    def float(self, name: str, low: float, high: float, log: bool, path: str) -> float: ...
    def int(self, name: str, low: int, high: int, step: int, log: bool, path: str) -> int: ...


def decide(chooser: Chooser, name: str, param: Any, path: str | None = None) -> Any:
    """Decide ``param`` with ``chooser``; fixed values are not decisions and are returned as is."""
    path = path or name
    if isinstance(param, FloatRange):
        return chooser.float(name, param.low, param.high, param.log, path)
    if isinstance(param, IntRange):
        return chooser.int(name, param.low, param.high, param.step, param.log, path)
    values = param_values(param)
    assert values is not None
    if len(values) == 1:
        return values[0]
    return chooser.categorical(name, values, path)


class RandomChooser:
    """Seeded uniform (log-uniform for log ranges) sampling."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def categorical(self, name: str, choices: Sequence[Any], path: str) -> Any:
        return self.rng.choice(list(choices))

    def float(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        return self.rng.uniform(low, high)

    def int(self, name: str, low: int, high: int, step: int, log: bool, path: str) -> int:
        if log:
            return round(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        return self.rng.randrange(low, high + 1, step)


class LeastChooser:
    """Every range at its low end, every choice of numbers at its least and any other choice
    at its first: the lower end of a space's sizes, cheaply (``SearchSpace.least``)."""

    def categorical(self, name: str, choices: Sequence[Any], path: str) -> Any:
        numbers = all(isinstance(c, int | float) and not isinstance(c, bool) for c in choices)
        return min(choices) if numbers else choices[0]

    def float(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        return low

    def int(self, name: str, low: int, high: int, step: int, log: bool, path: str) -> int:
        return low


class OptunaChooser:
    """Optuna's define-by-run API, e.g. on a trial from ``study.ask()``."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def categorical(self, name: str, choices: Sequence[Any], path: str) -> Any:
        return self.trial.suggest_categorical(name, list(choices))

    def float(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        return self.trial.suggest_float(name, low, high, log=log)

    def int(self, name: str, low: int, high: int, step: int, log: bool, path: str) -> int:
        return self.trial.suggest_int(name, low, high, step=step, log=log)


class CandidateNotInSpaceError(ValueError):
    """A candidate (or Optuna params) with a value the space does not allow."""


class _LookupChooser:
    """Answers each decision from a mapping and records Optuna params and distributions."""

    def __init__(self, values: Mapping[str, Any], by_path: bool) -> None:
        self.values = values
        self.by_path = by_path
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, od.BaseDistribution] = {}

    def _lookup(self, name: str, path: str, dist: od.BaseDistribution) -> Any:
        key = path if self.by_path else name
        if key not in self.values:
            raise CandidateNotInSpaceError(f"field {key!r} is missing")
        value = self.values[key]
        if not _in_distribution(value, dist):
            raise CandidateNotInSpaceError(
                f"field {key!r}: {value!r} is not allowed; allowed: {_describe(dist)}"
            )
        self.params[name] = value
        self.distributions[name] = dist
        return value

    def categorical(self, name: str, choices: Sequence[Any], path: str) -> Any:
        return self._lookup(name, path, od.CategoricalDistribution(list(choices)))

    def float(self, name: str, low: float, high: float, log: bool, path: str) -> float:
        return float(self._lookup(name, path, od.FloatDistribution(low, high, log=log)))

    def int(self, name: str, low: int, high: int, step: int, log: bool, path: str) -> int:
        return int(self._lookup(name, path, od.IntDistribution(low, high, log=log, step=step)))


def ReplayChooser(flat_candidate: Mapping[str, Any]) -> _LookupChooser:  # noqa: N802
    """Re-decide a candidate from its flat form (keys are decision paths)."""
    return _LookupChooser(flat_candidate, by_path=True)


def ParamsChooser(params: Mapping[str, Any]) -> _LookupChooser:  # noqa: N802
    """Decide from Optuna params (keys are decision names)."""
    return _LookupChooser(params, by_path=False)


def _in_distribution(value: Any, dist: od.BaseDistribution) -> bool:
    if isinstance(dist, od.CategoricalDistribution):
        # bool is an int in Python: compare types too, so True never passes for 1.
        return any(value == c and type(value) is type(c) for c in dist.choices)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(dist, od.IntDistribution) and value != int(value):
        return False
    return dist.low <= value <= dist.high


def _describe(dist: od.BaseDistribution) -> str:
    if isinstance(dist, od.CategoricalDistribution):
        return ", ".join(map(repr, dist.choices))
    return f"[{dist.low}, {dist.high}]" + (" (log)" if getattr(dist, "log", False) else "")
