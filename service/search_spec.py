"""``SearchSpec``: one search, from space to budget, as a validated Python object or YAML/JSON.

```yaml
name: nb201-accuracy-params
space: nb201                      # a built-in space name, a file path, or the space inline
task: {dataset: "npz:../shared/data/cifar10_subset.npz"}
objectives:
  - {name: accuracy, direction: maximize}
  - {name: params, direction: minimize, reference: 2.0e6}   # reference: hypervolume's worst point
constraints: ["params <= 1e6"]
budget: {max_trials: 100, max_seconds: 3600}
strategy:
  name: cascade                   # random | tpe | nsga2 | gp | cascade
  sampler: tpe                    # the sampler a cascade wraps
  rungs: [1, 3, 9]                # training epochs per rung (successive halving)
  reduction_factor: 3
  screen: {proxies: [synflow, naswot, params], keep_fraction: 0.25}
seed: 0
```

Every error names the field. Metric names are those a ``TrialResult`` carries (``accuracy``,
``params``, ``flops``, ``model_bytes``, ``bitops``, ``latency_ms``, ...).
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from winnow.proxies import PROXIES
from winnow.search_space.datasets import DATASETS, load_dataset
from winnow.search_space.spec import SearchSpace, SpecError, format_validation_error, load_space
from winnow.search_space.spec import parse_space as parse_search_space

SAMPLERS = ("random", "tpe", "nsga2", "gp")
STRATEGIES = (*SAMPLERS, "cascade")
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

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, dataset: str) -> str:
        DATASETS.get(dataset.partition(":")[0])  # the name only: loading may be slow
        return dataset

    @property
    def key(self) -> str:
        """Identifies the task across searches: results cached under one key are reused."""
        return self.dataset

    def check_dataset(self) -> None:
        """Fail before any work when a stated input shape or class count is not the dataset's."""
        if self.input_shape is None and self.num_classes is None:
            return
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
    """When a search stops: whichever limit comes first. ``max_trials`` counts training runs
    (each rung's run is one; hash hits and proxy screening are free)."""

    max_trials: int = Field(50, ge=1)
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
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            PROXIES.get(name)
        if not names:
            raise ValueError("screening needs at least one proxy")
        return names


class Strategy(_Strict):
    name: Literal["random", "tpe", "nsga2", "gp", "cascade"] = "cascade"
    sampler: Literal["random", "tpe", "nsga2", "gp"] = "tpe"  # what a cascade wraps
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
        return self.sampler if self.name == "cascade" else self.name

    @property
    def cascade(self) -> bool:
        return self.name == "cascade"


class SearchSpec(_Strict):
    name: str = "search"
    space: str | dict[str, Any]
    task: Task
    objectives: list[Objective] = [Objective(name="accuracy", direction="maximize")]
    constraints: list[Constraint] = []
    budget: Budget = Budget()
    strategy: Strategy = Strategy()
    seed: int = 0

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

    @field_validator("space")
    @classmethod
    def _valid_space(cls, space: str | dict[str, Any]) -> str | dict[str, Any]:
        cls.resolve_space(space)
        return space

    @staticmethod
    def resolve_space(space: str | dict[str, Any]) -> SearchSpace:
        return parse_search_space(space) if isinstance(space, dict) else load_space(space)

    @property
    def search_space(self) -> SearchSpace:
        return self.resolve_space(self.space)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)

    @property
    def key(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def _parse_constraint(text: str) -> dict[str, Any]:
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(
            f"constraint {text!r} is not 'METRIC OP NUMBER' with OP one of {', '.join(OPERATORS)}"
        )
    metric, op, value = match.groups()
    return {"metric": metric, "op": op, "value": float(value)}


def parse_search_spec(data: dict[str, Any]) -> SearchSpec:
    try:
        return SearchSpec.model_validate(data)
    except ValidationError as error:
        message = format_validation_error(error).replace(
            "invalid search space", "invalid search spec"
        )
        raise SpecError(message) from None


def load_search_spec(path: str | Path) -> SearchSpec:
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"no search-spec file {str(path)!r}")
    try:
        data = (
            json.loads(file.read_text())
            if file.suffix == ".json"
            else yaml.safe_load(file.read_text())
        )
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(f"{file}: not valid {file.suffix.lstrip('.') or 'YAML'}: {error}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{file}: a search spec is a mapping with 'space' and 'task' fields")
    space = data.get("space")
    if isinstance(space, str) and (file.parent / space).is_file():
        data["space"] = str(file.parent / space)  # a space file next to the spec
    return parse_search_spec(data)
