"""The search-space spec language: four axes, YAML or JSON, validated with pydantic.

```yaml
name: joint
architecture: {family: nb201}            # or macro / mlp, with their own fields
normalization: [batchnorm, layernorm]    # a scalar fixes an axis, a list is a choice
optimizer:
  name: [sgd, adamw]
  lr: {low: 1.0e-4, high: 0.3, log: true}
  per_optimizer: {adamw: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}}
  schedule: cosine
  warmup_epochs: [0, 1]
  batch_size: [64, 128]
quantization:
  weight_bits: [4, 8, 32]
  scope: group                            # global | group | layer
  activation_bits: [8, 32]
  granularity: per_channel
  symmetric: [true, false]
```

Optimizer hyperparameters that a spec leaves out take the optimizer's own default (fixed), so
a search only explores what the spec asks for. Every error names the field and the allowed values.

``BUILTIN_SPACES`` and ``SpecError`` are defined in torch-free modules
(``builtin_spaces``, ``specfile``: the client SDK reads them) and importable from here too.
"""

from __future__ import annotations

import functools
import operator
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from winnow.search_space.archs import FAMILIES
from winnow.search_space.builtin_spaces import BUILTIN_SPACES, read_space_file
from winnow.search_space.candidate import Candidate
from winnow.search_space.norms import NORMS
from winnow.search_space.optimizers import HYPERPARAMETERS, OPTIMIZERS
from winnow.search_space.params import (
    BatchSize,
    CandidateNotInSpaceError,
    Chooser,
    Epochs,
    LeastChooser,
    OptunaChooser,
    Param,
    ParamsChooser,
    RandomChooser,
    ReplayChooser,
    decide,
    param_values,
    to_param,
)
from winnow.search_space.quantization import (
    ACTIVATION_BITS,
    GRANULARITIES,
    WEIGHT_BITS,
    QuantPolicy,
)
from winnow.search_space.schedules import SCHEDULES
from winnow.search_space.specfile import (
    FieldProblems,
    Problem,
    SpecError,
    SpecFileError,
    raise_problems,
    validation_problems,
)


def check_choices(param: Any, allowed: list[Any] | tuple[Any, ...]) -> Any:
    """Require ``param`` to be a fixed value or a list drawn from ``allowed`` (a field
    validator's check: pydantic reports the field)."""
    values = param_values(param)
    allowed_text = ", ".join(map(str, allowed))
    if values is None:
        raise ValueError(f"takes a value or a list of values, not a range; allowed: {allowed_text}")
    bad = [v for v in values if v not in allowed or isinstance(v, bool) != _is_bool(allowed)]
    if bad:
        verb = "is" if len(bad) == 1 else "are"
        raise ValueError(f"{', '.join(map(repr, bad))} {verb} not allowed; allowed: {allowed_text}")
    return param


def _is_bool(allowed: Any) -> bool:
    return all(isinstance(a, bool) for a in allowed)


class OptimizerAxis(BaseModel):
    """The optimizer axis: ``name`` picks optimizers; other keys are hyperparameter Params."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)
    name: Param = "sgd"
    """The optimizers to choose among (see the optimizers under Names). Any other key is a
    hyperparameter Param shared by the chosen optimizers that take it; a hyperparameter left
    out takes each optimizer's own default (fixed)."""
    per_optimizer: dict[str, dict[str, Param]] = {}
    """Hyperparameter Params for one optimizer only: ``{adamw: {lr: ...}}``."""
    schedule: Param = "cosine"
    """The learning-rate schedule after warmup."""
    warmup_epochs: Epochs = 0
    """Epochs of linear warmup."""
    batch_size: BatchSize = 128
    """Training batch size."""

    @field_validator("name")
    @classmethod
    def _known_optimizers(cls, name: Any) -> Any:
        return check_choices(name, OPTIMIZERS.names())

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, schedule: Any) -> Any:
        return check_choices(schedule, SCHEDULES)

    @model_validator(mode="after")
    def _check(self) -> OptimizerAxis:
        chosen = [OPTIMIZERS.get(n) for n in param_values(self.name)]
        problems = [*self._shared_problems(chosen), *self._per_optimizer_problems()]
        raise_problems(problems)
        return self

    def _shared_problems(self, chosen: list[Any]) -> Iterator[Problem]:
        """Hyperparameters given for every chosen optimizer (the extra fields)."""
        fields = [*type(self).model_fields, *HYPERPARAMETERS]
        for hp, raw in (self.model_extra or {}).items():
            if hp not in HYPERPARAMETERS:
                yield hp, f"unknown field; allowed: {', '.join(f for f in fields)}"
            elif not any(hp in e.defaults for e in chosen):
                yield hp, f"not a hyperparameter of {', '.join(e.name for e in chosen)}"
            else:
                try:
                    self.model_extra[hp] = to_param(raw)
                except ValueError as error:
                    yield hp, str(error)

    def _per_optimizer_problems(self) -> Iterator[Problem]:
        for opt, hps in self.per_optimizer.items():
            field = f"per_optimizer.{opt}"
            if opt not in param_values(self.name):
                names = ", ".join(map(str, param_values(self.name)))
                yield field, f"{opt} is not among optimizer.name ({names})"
                continue
            allowed = OPTIMIZERS.get(opt).defaults
            for hp in hps:
                if hp not in allowed:
                    yield f"{field}.{hp}", f"unknown field; allowed: {', '.join(allowed)}"

    def hyperparameter(self, optimizer: str, hp: str) -> Any:
        """The Param for ``hp`` of ``optimizer``: its override, the shared value, or the default."""
        if hp in self.per_optimizer.get(optimizer, {}):
            return self.per_optimizer[optimizer][hp]
        shared = (self.model_extra or {}).get(hp)
        return OPTIMIZERS.get(optimizer).defaults[hp] if shared is None else shared


class QuantizationAxis(BaseModel):
    """The quantization policy: fake quantization (straight-through) of weights and inputs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    weight_bits: Param = 32
    """Weight bits (32: not quantized), decided per ``scope``."""
    scope: Literal["global", "group", "layer"] = "global"
    """Where weight bits are decided: once, per group of layers (e.g. a stage), or per layer."""
    activation_bits: Param = 32
    """Bits of every quantized layer's input (32: not quantized)."""
    granularity: Param = "per_channel"
    """Weight scales per tensor or per output channel."""
    symmetric: Param = True
    """Symmetric (zero point 0) or affine quantization."""

    @field_validator("weight_bits", "activation_bits", "granularity", "symmetric")
    @classmethod
    def _allowed(cls, param: Any, info: ValidationInfo) -> Any:
        allowed = {
            "weight_bits": WEIGHT_BITS,
            "activation_bits": ACTIVATION_BITS,
            "granularity": GRANULARITIES,
            "symmetric": (True, False),
        }
        return check_choices(param, allowed[info.field_name])


# The spec's architecture section: one registered family's section, told apart by ``family``
# (a discriminated union of every family in FAMILIES, so that a family registers in one place).
Architecture = Annotated[
    functools.reduce(operator.or_, (FAMILIES.get(name).space for name in FAMILIES)),
    Field(discriminator="family"),
]


class SearchSpace(BaseModel):
    """A joint space over architecture x normalization x optimizer x quantization."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: str = "space"
    """A name to show."""
    architecture: Architecture
    """One architecture family's section, chosen by its ``family`` field (see Architecture
    families)."""
    normalization: Param = "batchnorm"
    """The normalization layer at every norm position (see the norms under Names)."""
    optimizer: OptimizerAxis = OptimizerAxis()
    """The optimizer, its hyperparameters, schedule and batch size."""
    quantization: QuantizationAxis = QuantizationAxis()
    """The quantization policy."""

    @field_validator("normalization")
    @classmethod
    def _known_norms(cls, normalization: Any) -> Any:
        return check_choices(normalization, NORMS.names())

    @model_validator(mode="after")
    def _scope_has_slots(self) -> SearchSpace:
        """A family that cannot name its layers before building (``custom``) decides weight
        bits globally: its ``quant_slots`` refuse a group or layer scope, said here."""
        axis = self.quantization
        if axis.scope != "global" and len(param_values(axis.weight_bits) or [0, 1]) > 1:
            try:
                FAMILIES.get(self.architecture.family).quant_slots(self.architecture, axis.scope)
            except ValueError as error:
                raise FieldProblems([("quantization.scope", str(error))]) from None
        return self

    def imports(self) -> dict[str, str]:
        """``{field: import path}`` of the user code the space names (a custom family's
        builder), read from the spec: nothing is imported."""
        family = FAMILIES.get(self.architecture.family)
        return {f"architecture.{k}": v for k, v in family.imports(self.architecture).items()}

    def check_user_code(self, shape: tuple[tuple[int, ...], int] | None) -> None:
        """Import the user code the space builds with and, when the task's ``(input shape,
        classes)`` is known, build its least candidate on the meta device; ``SpecError`` at
        the field, with the code's own message. Nothing for winnow's own families."""
        family = FAMILIES.get(self.architecture.family)
        if family.check is None:
            return
        least = self.least()
        try:
            family.check(least.architecture, least.normalization, shape)
        except Exception as error:  # noqa: BLE001 - the user's code may raise anything
            field = next(iter(self.imports()), "architecture")
            message = (
                str(error)
                if isinstance(error, RuntimeError)
                else f"{type(error).__name__}: {error}"
            )
            raise SpecError.of("search space", [(field, message)]) from None

    # --- deciding candidates ----------------------------------------------------------------

    def suggest(self, chooser: Chooser) -> Candidate:
        family = FAMILIES.get(self.architecture.family)
        return Candidate(
            architecture=family.suggest(self.architecture, chooser),
            normalization=decide(chooser, "normalization", self.normalization),
            optimizer=self._suggest_optimizer(chooser),
            quantization=self._suggest_quantization(chooser),
        )

    def _suggest_optimizer(self, chooser: Chooser) -> dict[str, Any]:
        axis = self.optimizer
        name = decide(chooser, "optimizer.name", axis.name)
        decided = {"name": name}
        for hp in OPTIMIZERS.get(name).defaults:
            param = axis.hyperparameter(name, hp)
            decided[hp] = decide(chooser, f"optimizer.{name}.{hp}", param, f"optimizer.{hp}")
        for field in ("schedule", "warmup_epochs", "batch_size"):
            decided[field] = decide(chooser, f"optimizer.{field}", getattr(axis, field))
        return decided

    def suggest_quantization(self, chooser: Chooser) -> QuantPolicy:
        """A policy of the quantization axis alone (what a quantization-trained supernet
        samples: its draws do not depend on the other axes)."""
        return QuantPolicy.model_validate(self._suggest_quantization(chooser))

    def _suggest_quantization(self, chooser: Chooser) -> dict[str, Any]:
        axis = self.quantization
        if axis.scope == "global" or len(param_values(axis.weight_bits) or [0, 1]) == 1:
            slots = ["*"]
        else:
            slots = FAMILIES.get(self.architecture.family).quant_slots(
                self.architecture, axis.scope
            )
        return {
            "weight_bits": {
                s: decide(chooser, f"quantization.weight_bits.{s}", axis.weight_bits) for s in slots
            },
            "activation_bits": decide(
                chooser, "quantization.activation_bits", axis.activation_bits
            ),
            "granularity": decide(chooser, "quantization.granularity", axis.granularity),
            "symmetric": decide(chooser, "quantization.symmetric", axis.symmetric),
        }

    def least(self) -> Candidate:
        """The candidate with every numeric choice at its least (``LeastChooser``): near the
        space's smallest network, though not a bound (a categorical choice, such as an nb201
        op, can take fewer parameters than its first option)."""
        return self.suggest(LeastChooser())

    def sample(self, n: int = 1, seed: int = 0) -> list[Candidate]:
        """``n`` candidates drawn uniformly (log-uniformly on log ranges) with ``seed``."""
        chooser = RandomChooser(random.Random(seed))
        return [self.suggest(chooser) for _ in range(n)]

    def suggest_optuna(self, trial: Any) -> Candidate:
        """Decide a candidate with an Optuna trial (define-by-run, e.g. from ``study.ask()``)."""
        return self.suggest(OptunaChooser(trial))

    # --- replay: validation and the Optuna round trip -----------------------------------------

    def flatten(self, candidate: Candidate) -> dict[str, Any]:
        """The candidate's decided values keyed by decision path."""
        flat = FAMILIES.get(candidate.architecture["family"]).decisions(candidate.architecture)
        flat["normalization"] = candidate.normalization
        flat.update({f"optimizer.{k}": v for k, v in candidate.optimizer.items()})
        q = candidate.quantization
        flat.update({f"quantization.weight_bits.{s}": b for s, b in q.weight_bits.items()})
        for field in ("activation_bits", "granularity", "symmetric"):
            flat[f"quantization.{field}"] = getattr(q, field)
        return flat

    def to_optuna(self, candidate: Candidate) -> tuple[dict[str, Any], dict[str, Any]]:
        """Optuna (params, distributions) of a candidate of this space, e.g. for
        ``optuna.trial.create_trial``. Raises CandidateNotInSpaceError if it is not in the space."""
        chooser = ReplayChooser(self.flatten(candidate))
        replayed = self.suggest(chooser)
        if replayed.canonical_json() != candidate.canonical_json():
            raise _not_in_space(candidate, replayed)
        return chooser.params, chooser.distributions

    def from_optuna(self, params: dict[str, Any]) -> Candidate:
        return self.suggest(ParamsChooser(params))

    def validate_candidate(self, candidate: Candidate) -> Candidate:
        """Return the candidate if this space can propose it; else raise naming a bad field."""
        self.to_optuna(candidate)
        return candidate


def _not_in_space(candidate: Candidate, replayed: Candidate) -> ValueError:
    ours, theirs = candidate.model_dump(), replayed.model_dump()
    fields = [k for k in ours if ours[k] != theirs[k]]
    return CandidateNotInSpaceError(
        f"candidate differs from the space in {', '.join(fields)}: "
        f"expected {', '.join(f'{k}={theirs[k]}' for k in fields)}"
    )


# --- loading --------------------------------------------------------------------------------


def parse_space(data: dict[str, Any]) -> SearchSpace:
    """A space from its mapping; ``SpecError`` lists every field at fault."""
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as error:
        raise SpecError.of("search space", validation_problems(error, SearchSpace)) from None


def load_space(source: str | Path) -> SearchSpace:
    """Load a space from a YAML/JSON file, or a built-in name (see ``BUILTIN_SPACES``)."""
    if str(source) in BUILTIN_SPACES:
        return parse_space(BUILTIN_SPACES[str(source)])
    data = read_space_file(source)
    try:
        return parse_space(data)
    except SpecError as error:
        raise SpecFileError(source, str(error), error.problems) from None
