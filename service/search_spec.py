"""``SearchSpec``: one search, from space to budget, as a validated Python object or YAML/JSON.

```yaml
name: nb201-accuracy-params
space: nb201                      # a built-in space name, a file path, or the space inline
task: {dataset: "npz:../shared/data/cifar10_subset.npz"}
objectives:
  - {name: accuracy, direction: maximize}
  - {name: params, direction: minimize, reference: 2.0e6}   # reference: hypervolume's worst point
constraints: ["params <= 1e6"]
budget: {max_trials: 100, max_epochs: 600, max_seconds: 3600}   # candidates; epochs
strategy:
  name: cascade                   # random | tpe | nsga2 | gp | cascade
  sampler: tpe                    # the sampler a cascade wraps
  rungs: [1, 3, 9]                # training epochs per rung (successive halving)
  reduction_factor: 3
  screen: {proxies: [synflow, naswot, params], keep_fraction: 0.25}
seed: 0
reproducible: false              # true: no cross-search reuse, one training at a time
```

Every error names the field. Metric names are those a ``TrialResult`` carries (``accuracy``,
``params``, ``flops``, ``model_bytes``, ``bitops``, ``latency_ms``, ...).

Parsing checks a spec's shape; the names it refers to (the space, the dataset, the strategy,
the sampler and the proxies) are checked against their registries by ``check_names``, which
``parse_search_spec`` runs by default. The two are apart because the registries import torch
and optuna: the client SDK parses only (with ``check_names=False``), and the server, ``winnow
search run`` and the engine check the names of every spec they accept.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from winnow.records import TRAIN_METRICS
from winnow.search_space.specfile import (
    SpecError,
    SpecFileError,
    format_field_errors,
    format_validation_error,
    load_yaml_or_json,
)

if TYPE_CHECKING:
    from winnow.search_space.spec import SearchSpace

CASCADE = "cascade"  # the strategy that wraps a sampler (``strategy.sampler``) in the cascade
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    name: str
    direction: Literal["maximize", "minimize"] = "maximize"
    reference: float | None = None  # the hypervolume reference value (the worst that counts)


class Constraint(_Strict):
    """``metric op value``, e.g. ``params <= 1e6``; given as that string or as a mapping."""

    metric: str
    op: Literal["<=", ">=", "<", ">"]
    value: float

    def satisfied(self, metrics: dict[str, float]) -> bool | None:
        """True/False, or None while no metric of that name is known yet."""
        if self.metric not in metrics:
            return None
        return OPERATORS[self.op](metrics[self.metric], self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


class Task(_Strict):
    """What the candidates learn: a dataset spec of ``winnow.search_space.datasets``."""

    dataset: str
    input_shape: tuple[int, ...] | None = None  # optional: checked against the dataset
    num_classes: int | None = None  # optional: checked against the dataset

    def name_problems(self) -> Iterator[tuple[str, str]]:
        """(field, message) for an unknown dataset name (the name only: loading may be slow;
        ``check_dataset`` loads)."""
        from winnow.search_space.datasets import DATASETS

        return _failures({"dataset": lambda: DATASETS.get(self.dataset.partition(":")[0])})

    @property
    def key(self) -> str:
        """Identifies the task across searches: results cached under one key are reused."""
        return self.dataset

    def check_dataset(self) -> None:
        """Fail before any work when a stated input shape or class count is not the dataset's."""
        if self.input_shape is None and self.num_classes is None:
            return
        from winnow.search_space.datasets import load_dataset

        data = load_dataset(self.dataset)
        if self.input_shape is not None and tuple(self.input_shape) != data.input_shape:
            raise SpecError(
                f"field 'task.input_shape': {list(self.input_shape)} is not the shape of "
                f"{self.dataset} ({list(data.input_shape)})"
            )
        if self.num_classes is not None and self.num_classes != data.num_classes:
            raise SpecError(
                f"field 'task.num_classes': {self.num_classes} is not the number of classes of "
                f"{self.dataset} ({data.num_classes})"
            )


class Budget(_Strict):
    """When a search stops: whichever limit comes first.

    ``max_trials`` counts candidates (configurations) sent to training, as Optuna's
    ``n_trials``, Katib's ``maxTrialCount`` and W&B's ``run_cap`` do: a promotion to a higher
    rung is the same candidate and does not count, and results reused from the equivalence
    cache and candidates screened out by proxies are free. Once ``max_trials`` candidates have
    started, the promotions successive halving makes due still run, until none is due.
    ``max_epochs`` caps the compute: training epochs summed over every training run,
    promotions included (a run starts only if it fits). ``max_seconds`` caps the wall time and
    ``max_device_seconds`` the seconds spent training; ``max_proposals`` the sampler's asks."""

    max_trials: int = Field(50, ge=1)
    max_epochs: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    max_device_seconds: float | None = Field(None, gt=0)
    max_proposals: int | None = Field(None, ge=1)  # default: 50 x max_trials

    @property
    def proposals(self) -> int:
        return self.max_proposals or 50 * self.max_trials


class Screen(_Strict):
    """Zero-cost proxy screening of the cascade.

    A candidate goes on to training when its ensemble score ranks in the top ``keep_fraction``
    of the last ``population`` scores the search has seen (itself included). The first
    ``min_population`` scored candidates go on unscreened (there is nothing to rank them
    against). The ensemble is AZ-NAS's rank aggregation until ``calibrate_after`` candidates
    have been trained, then a calibrated ensemble fitted on this search's own trained results,
    refitted every ``refit_every``."""

    proxies: list[str] = ["synflow", "naswot", "jacob_cov", "snip", "params", "flops"]
    keep_fraction: float = Field(0.2, gt=0, le=1)
    population: int = Field(500, ge=2)  # the most recent scored candidates a new one ranks in
    min_population: int = Field(10, ge=1)
    calibrate_after: int = Field(10, ge=4)
    refit_every: int = Field(5, ge=1)

    @field_validator("proxies")
    @classmethod
    def _some(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("screening needs at least one proxy")
        return names

    def name_problems(self) -> Iterator[tuple[str, str]]:
        """(field, message) for the first unknown proxy name."""
        from winnow.proxies import PROXIES

        return _failures({"proxies": lambda: [PROXIES.get(name) for name in self.proxies]})


class Strategy(_Strict):
    name: str = CASCADE  # a sampler's name, or cascade
    sampler: str = "tpe"  # what a cascade wraps
    rungs: list[int] = [1, 3, 9]
    reduction_factor: int = Field(3, ge=2)
    screen: Screen = Screen()
    reuse_across_searches: bool = True  # train results of other searches on the task count
    # How many of the newest screened-out trials (pruned with no rung result) the sampler
    # models; older ones stay stored, the sampler forgets them (samplers.SamplerViewStorage).
    pruned_window: int | None = Field(60, ge=1)

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, rungs: list[int]) -> list[int]:
        if not rungs or any(e < 1 for e in rungs) or sorted(set(rungs)) != rungs:
            raise ValueError(f"rungs are strictly increasing epochs >= 1, got {rungs}")
        return rungs

    @property
    def sampler_name(self) -> str:
        return self.sampler if self.name == CASCADE else self.name

    @property
    def cascade(self) -> bool:
        return self.name == CASCADE

    def name_problems(self) -> Iterator[tuple[str, str]]:
        """(field, message) for an unknown strategy, sampler or proxy name."""
        from winnow.service.engine.sampling import SAMPLERS

        yield from _failures(
            {
                "name": lambda: _known_strategy(self.name, SAMPLERS.names()),
                "sampler": lambda: SAMPLERS.get(self.sampler),
            }
        )
        yield from _within("screen", self.screen.name_problems())


class SearchSpec(_Strict):
    name: str = "search"
    space: str | dict[str, Any]
    task: Task
    objectives: list[Objective] = [Objective(name="accuracy", direction="maximize")]
    constraints: list[Constraint] = []
    budget: Budget = Budget()
    strategy: Strategy = Strategy()
    seed: int = 0
    # The same spec gives the same front: no results reused from other searches, and one
    # training at a time, each result told before the next ask (README, "Reproducible runs").
    reproducible: bool = False

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, raw: Any) -> Any:
        return [_parse_constraint(c) if isinstance(c, str) else c for c in raw or []]

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, objectives: list[Objective]) -> list[Objective]:
        names = [o.name for o in objectives]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"objectives need distinct names, at least one: {names}")
        return objectives

    @staticmethod
    def resolve_space(space: str | dict[str, Any]) -> SearchSpace:
        from winnow.search_space.spec import load_space, parse_space

        return parse_space(space) if isinstance(space, dict) else load_space(space)

    def check_names(self) -> SearchSpec:
        """Resolve every name against its registry: the space (built-in, file or inline), the
        dataset, the strategy, the sampler and the proxies; raise ``SpecError`` naming each
        field whose name is unknown (see the module docstring for why this is not parsing)."""
        problems = [
            *_failures({"space": lambda: self.resolve_space(self.space)}),
            *_within("task", self.task.name_problems()),
            *_within("strategy", self.strategy.name_problems()),
            *self.metric_problems(),
        ]
        if problems:
            raise SpecError(format_field_errors("search spec", problems))
        return self

    def metric_problems(self) -> Iterator[tuple[str, str]]:
        """Objectives and constraints must name a metric a trained result carries: any other
        name would fail every trial (an objective) or never be checked (a constraint)."""
        allowed = ", ".join(TRAIN_METRICS)
        named = [(f"objectives[{k}].name", o.name) for k, o in enumerate(self.objectives)]
        named += [(f"constraints[{k}]", c.metric) for k, c in enumerate(self.constraints)]
        for field, metric in named:
            if metric not in TRAIN_METRICS:
                yield field, f"unknown metric {metric!r}; allowed: {allowed}"

    @property
    def search_space(self) -> SearchSpace:
        return self.resolve_space(self.space)

    @property
    def reuses_across_searches(self) -> bool:
        """Whether trained results of other searches on the task answer for this one's."""
        return self.strategy.reuse_across_searches and not self.reproducible

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def _failures(checks: dict[str, Callable[[], object]]) -> Iterator[tuple[str, str]]:
    """(field, message) for each check that raises ``ValueError`` (a registry's unknown name,
    an invalid space)."""
    for field, check in checks.items():
        try:
            check()
        except ValueError as error:
            yield field, str(error)


def _known_strategy(name: str, samplers: list[str]) -> None:
    if name != CASCADE and name not in samplers:
        allowed = ", ".join([*samplers, CASCADE])
        raise ValueError(f"unknown strategy {name!r}; allowed: {allowed}")


def _within(parent: str, problems: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    return ((f"{parent}.{field}", message) for field, message in problems)


def _parse_constraint(text: str) -> dict[str, Any]:
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(
            f"constraint {text!r} is not 'METRIC OP NUMBER' with OP one of {', '.join(OPERATORS)}"
        )
    metric, op, value = match.groups()
    return {"metric": metric, "op": op, "value": float(value)}


def parse_search_spec(data: dict[str, Any], check_names: bool = True) -> SearchSpec:
    """A spec from its mapping; ``check_names=False`` checks its shape only (no torch)."""
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, "search spec")) from None
    return spec.check_names() if check_names else spec


def load_search_spec(path: str | Path, check_names: bool = True) -> SearchSpec:
    """A spec from a YAML/JSON file; a ``space`` that names a file next to it is that file."""
    file = Path(path)
    data = load_yaml_or_json(file, "search spec", expect="a mapping with 'space' and 'task' fields")
    space = data.get("space")
    if isinstance(space, str) and (file.parent / space).is_file():
        data["space"] = str(file.parent / space)  # a space file next to the spec
    try:
        return parse_search_spec(data, check_names)
    except SpecError as error:
        raise SpecFileError(file, str(error)) from None
