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

import functools
import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from winnow.records import TRAIN_METRICS
from winnow.search_space.numbers import INT32_MAX, UINT32_MAX, FiniteFloat
from winnow.search_space.specfile import (
    Problem,
    SpecError,
    SpecFileError,
    join_field,
    load_yaml_or_json,
    nested_problems,
    raise_problems,
    validation_problems,
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
# Budget limits: the API's Progress counters are int32 (a stored search past them could never
# be read back), and no search asks a million candidates; the default max_proposals
# (50 x max_trials) stays within them too.
MAX_TRIALS, MAX_PROPOSALS = 1_000_000, 100_000_000
MAX_RUNG_EPOCHS = 10_000  # a rung's training epochs
MAX_REDUCTION_FACTOR = 16  # successive halving keeps one in this many (Hyperband uses 3 or 4)
MAX_POPULATION = 100_000  # scores a screen ranks among, pruned trials a sampler models
MAX_KEPT_WEIGHTS = 1000  # trials whose weights a search keeps (each a file of the model's size)
MAX_SUPERNET_DEPTH = (
    64  # a supernet's cells per stage (the spaces' own bound, ``params.MAX_DEPTH``)
)
# A task's stated shape and classes: past these no dataset winnow loads (nor a network it
# builds) fits; a larger number is a typo.
MAX_INPUT_DIMS, MAX_INPUT_SIZE, MAX_CLASSES = 4, 4096, 100_000
MAX_WARM_START = 1000  # candidates a spec enqueues before the sampler's own
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


InputShape = tuple[Annotated[int, Field(ge=1, le=MAX_INPUT_SIZE)], ...] | None


class _Strict(BaseModel):
    # attribute docstrings are the fields' descriptions: the spec reference (docs/spec.md) is
    # generated from them (winnow.service.spec_docs)
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class Objective(_Strict):
    """A metric to optimize; several objectives make the search look for a Pareto front."""

    name: str
    """A metric a trained result carries (see the metrics under Names)."""
    direction: Literal["maximize", "minimize"] = "maximize"
    """Whether larger or smaller is better."""
    reference: float | None = Field(None, allow_inf_nan=False)
    """The hypervolume's reference value: the worst that still counts (default: the worst seen)."""


class Constraint(_Strict):
    """``metric op value``, e.g. ``params <= 1e6``; given as that string or as a mapping."""

    metric: str
    """The metric bounded (a metric a trained result carries)."""
    op: Literal["<=", ">=", "<", ">"]
    """The comparison."""
    value: FiniteFloat
    """The bound."""

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
    """A dataset spec: ``digits``, ``npz:PATH``, ``cifar10[:DIR]``, ``synthetic[:SHAPE]``,
    ``python:MODULE:FUNCTION`` (the user's function returns the arrays ``train_x``,
    ``train_y``, ``test_x``, ``test_y`` or a pair of torch datasets; a server imports only
    modules of ``winnow serve --allow-module``), ``imagefolder:DIR`` (``DIR/train/<class>/*``
    and ``DIR/test/<class>/*``, or ``DIR/<class>/*`` split by a seeded quarter) or
    ``hf:NAME[:CONFIG]`` (a Hugging Face dataset from the local cache; needs ``datasets``)."""
    input_shape: InputShape = Field(None, min_length=1, max_length=MAX_INPUT_DIMS)
    """Optional: checked against the dataset before any work; each size in [1, 4096]. With
    ``num_classes``, what the server sizes candidates by before it loads the dataset."""
    num_classes: int | None = Field(None, ge=2, le=MAX_CLASSES)
    """Optional: checked against the dataset before any work."""
    trainer: str | None = None
    """Optional: the user's training function, ``MODULE:FUNCTION``, called in the worker as
    ``fit(model, optimizer, scheduler, data, epochs, on_epoch, checkpoint, max_steps)`` and
    returning a ``Fitted(curve, epochs_run)`` (``winnow.search_space.trainer`` documents
    each argument); none: winnow's own loop, the same interface. Evaluation (test accuracy,
    costs) stays winnow's. A server imports only modules of ``winnow serve
    --allow-module``."""
    eval_every_epoch: bool = True
    """Measure the test accuracy after every training epoch too, on the test split the final
    accuracy is measured on: each trained row's learning curve beside its loss per epoch
    (the dashboard's intermediate values), never used for a decision. It changes no trained
    result (accuracy, loss, weights and costs are bit-identical), but the passes take time, so
    under a time budget fewer trials fit. False saves one pass over the test split per epoch
    but the last (winnow's loop takes the last epoch's from the final accuracy). A result
    reused from the task's shared cache keeps the curve it was trained with, measured or not.
    A user's trainer reads it as ``data.epoch_accuracy`` and may report the values or not."""

    @field_validator("trainer")
    @classmethod
    def _import_path(cls, trainer: str | None) -> str | None:
        if trainer is not None:
            from winnow.search_space.user_code import parse_import_path

            parse_import_path(trainer)  # ImportPathError is a ValueError: pydantic reports it
        return trainer

    def imports(self) -> dict[str, str]:
        """``{field: import path}`` of the user code the task names (``python:`` datasets,
        the trainer), read from the text: nothing is imported."""
        name, _, arg = self.dataset.partition(":")
        found = {"task.dataset": arg} if name == "python" else {}
        return found | ({"task.trainer": self.trainer} if self.trainer else {})

    def check_trainer(self) -> None:
        """Import the trainer and check that it takes the interface's arguments:
        ``SpecError`` at ``task.trainer`` saying what is wrong (no such module or function,
        not callable, another signature)."""
        if self.trainer is None:
            return
        from winnow.search_space.trainer import load_trainer
        from winnow.search_space.user_code import UserCodeError

        try:
            load_trainer(self.trainer)
        except UserCodeError as error:
            raise SpecError.of("search spec", [("task.trainer", str(error))]) from None
        except Exception as error:  # noqa: BLE001 - the user's module failed to import
            message = f"{self.trainer}: importing it raised {type(error).__name__}: {error}"
            raise SpecError.of("search spec", [("task.trainer", message)]) from None

    def name_problems(self) -> Iterator[Problem]:
        """(field, message) for an unknown dataset name or an argument its loader refuses
        (``npz:`` without a path, ``synthetic:0``): no loading, which may be slow;
        ``check_dataset`` loads."""
        from winnow.search_space.datasets import check_dataset_spec

        return _failures({"dataset": lambda: check_dataset_spec(self.dataset)})

    @property
    def key(self) -> str:
        """Identifies the task across searches: results cached under one key are reused."""
        return self.dataset

    @property
    def training_key(self) -> str:
        """The task key trained results are cached under: the dataset's, and with a user's
        trainer its path as well (another loop trains another network; proxies, hashes and
        costs, which no trainer touches, stay under ``key``)."""
        return self.key if self.trainer is None else f"{self.key}|trainer={self.trainer}"

    def check_dataset(self, load: bool = True) -> None:
        """Fail before any work when a stated input shape or class count is not the dataset's.
        With ``load`` false, only what is known without reading or building the dataset is
        checked (``synthetic:SHAPE`` is; files are not): what a request handler does, leaving
        the rest to ``Engine.resume`` in the search's own thread."""
        if self.input_shape is None and self.num_classes is None:
            return
        from winnow.search_space.datasets import dataset_shape

        known = dataset_shape(self.dataset, load)
        if known is None:
            return
        input_shape, num_classes = known
        if self.input_shape is not None and tuple(self.input_shape) != input_shape:
            raise SpecError(
                f"field 'task.input_shape': {list(self.input_shape)} is not the shape of "
                f"{self.dataset} ({list(input_shape)})"
            )
        if self.num_classes is not None and self.num_classes != num_classes:
            raise SpecError(
                f"field 'task.num_classes': {self.num_classes} is not the number of classes of "
                f"{self.dataset} ({num_classes})"
            )

    def stated_shape(self) -> tuple[tuple[int, ...], int] | None:
        """``(input shape, classes)`` as far as known without reading the dataset (stated, or
        from the dataset's arguments), else None: what a request handler may know."""
        from winnow.search_space.datasets import dataset_shape

        stated = self.input_shape is not None and self.num_classes is not None
        known = None if stated else dataset_shape(self.dataset, load=False)
        if not stated and known is None:
            return None
        input_shape, num_classes = known or (self.input_shape, self.num_classes)
        return tuple(self.input_shape or input_shape), self.num_classes or num_classes

    def shape(self) -> tuple[tuple[int, ...], int]:
        """``(input shape, classes)`` of the task: as stated, else the dataset's (which may
        load it)."""
        if self.input_shape is not None and self.num_classes is not None:
            return tuple(self.input_shape), self.num_classes
        from winnow.search_space.datasets import dataset_shape

        input_shape, num_classes = dataset_shape(self.dataset)
        return tuple(self.input_shape or input_shape), self.num_classes or num_classes


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

    max_trials: int = Field(50, ge=1, le=MAX_TRIALS)
    """Candidates (configurations) sent to training; promotions, reused results and screened
    candidates are free."""
    max_epochs: int | None = Field(None, ge=1, le=INT32_MAX)
    """Training epochs summed over every training run, promotions included."""
    max_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Wall-clock seconds of each run of the engine: a resumed search (``winnow search
    resume``, a server restart) starts the clock again."""
    max_device_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Seconds of training on the workers' devices, summed."""
    max_proposals: int | None = Field(None, ge=1, le=MAX_PROPOSALS)
    """Candidates proposed, screened ones included (default: 50 x max_trials)."""

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
    refitted every ``refit_every``. At each fit, a proxy whose Kendall tau on those results is
    below that of the candidates' parameter counts, both measured on the results where the
    proxy's value is known, gets weight 0 (the evidence ladder's rule). The comparison is
    signed: a proxy that ranks the results in reverse is below params, never used reversed. A
    fit on fewer than 5 results weighs every proxy, and proxies are zeroed only while some
    proxy with a measured tau not below params' remains, or ``params`` is one of them (a
    constant or failed proxy has no tau); otherwise none is."""

    proxies: list[str] = ["synflow", "naswot", "jacob_cov", "snip", "params", "flops"]
    """The zero-cost proxies the ensemble ranks by (see the proxy names below)."""
    keep_fraction: float = Field(0.2, gt=0, le=1, allow_inf_nan=False)
    """The top fraction of the recent population that goes on to training."""
    population: int = Field(500, ge=2, le=MAX_POPULATION)
    """The most recent scored candidates a new one ranks among."""
    min_population: int = Field(10, ge=1, le=MAX_POPULATION)
    """The first scored candidates, which go on unscreened."""
    calibrate_after: int = Field(10, ge=4, le=MAX_TRIALS)
    """Trained candidates after which the calibrated ensemble replaces rank aggregation."""
    refit_every: int = Field(5, ge=1, le=MAX_TRIALS)
    """Trained candidates between refits of the calibrated ensemble."""

    @field_validator("proxies")
    @classmethod
    def _some(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("screening needs at least one proxy")
        return names

    def name_problems(self) -> Iterator[Problem]:
        """(field, message) for each unknown proxy name."""
        from winnow.proxies import PROXIES

        return _failures(
            {f"proxies[{k}]": functools.partial(PROXIES.get, p) for k, p in enumerate(self.proxies)}
        )


class Supernet(_Strict):
    """The supernet stage of the cascade (off unless given): a weight-sharing supernet of the
    space's family is trained once per task, family, space and these settings (a trial of its
    own, stored and reused by later searches on the task), then every candidate that passed
    the proxy screen is scored by its inherited accuracy on a validation split carved from the
    training data. After ``warmup`` scored candidates, one whose score is below the
    ``1 - keep_fraction`` quantile of the scores of those scored so far (itself included) is
    pruned. The score is the inherited accuracy until ``screen.calibrate_after`` of the scored
    candidates are trained, then a calibrated ensemble of the screen's proxies and the inherited
    accuracy fitted on their results, in which one that ranks them worse than params gets
    weight 0 (the evidence ladder's ``combined`` tier). Families with a supernet: ``macro``,
    ``nb201`` and ``mlp``. A supernet ranks the architecture (for ``mlp``, x quantization)
    under its own norm and optimizer: an ``mlp`` space's supernet uses batchnorm when the space
    allows it (else its first norm with an elastic-width form), and a candidate of another norm
    is scored on the rest of its recipe."""

    epochs: int = Field(5, ge=1, le=MAX_RUNG_EPOCHS)
    """Epochs of supernet training over the training samples not held out."""
    minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    """A time budget for the training (none: the epochs alone)."""
    batch_size: int = Field(64, ge=2, le=4096)
    """The supernet's training batch size."""
    bn_batches: int = Field(4, ge=0, le=1000)
    """Training batches each subnet's BatchNorm statistics (and, for ``mlp``, its activation
    ranges) are re-estimated on (0: the supernet's own, the ablation)."""
    validation_fraction: float = Field(0.2, gt=0, lt=1, allow_inf_nan=False)
    """The fraction of the training samples held out to score candidates on."""
    validation_samples: int = Field(512, ge=1, le=1_000_000)
    """At most this many of the held-out samples score each candidate."""
    keep_fraction: float = Field(0.5, gt=0, le=1, allow_inf_nan=False)
    """The top fraction by the stage's score (see above) that goes on to training."""
    warmup: int = Field(5, ge=1, le=MAX_POPULATION)
    """The first scored candidates, which go on unpruned."""
    seed: int = Field(0, ge=0, le=UINT32_MAX)
    """Seeds the supernet's initialisation, sampling and validation split."""
    cells_per_stage: int | None = Field(None, ge=1, le=MAX_SUPERNET_DEPTH)
    """The supernet's cells per stage, for a family whose supernet has them (``nb201``): a
    shallower supernet than the space's networks trains more steps in the same time (none: the
    space's depth). Each candidate is scored by its cell at the supernet's depth."""


MAX_CONFIRM_SEEDS = 100  # further training runs per confirmed recipe


class Confirm(_Strict):
    """Confirmation of the front (off unless given; ``confirm: {}`` takes the defaults). After
    the budget, the front's recipes (``top_k`` of them when the front is larger, spread along
    it: see ``top_k``) are trained again at the top rung's epochs with ``seeds`` further seeds
    (the spec's ``seed + 1``, ``+ 2``, ...), each run a trial of its own (stage
    ``confirm:<seed>``). Each recipe's figures are the mean, sample standard deviation and a
    one-sided 95 % Student-t bound on the bad side of the mean (``lower``: below the mean for
    an objective to maximise, above it for one to minimise) over the confirmation runs alone:
    the run that put the recipe on the front is left out, since it was selected for being
    good. The final front, its leader (``winnow status``, gRPC ``ListSearches``, the dashboard) and
    ``winnow export`` use the means; a recipe whose mean another confirmed recipe's dominates
    is shown as off the front. It runs up to ``top_k`` x ``seeds`` top-rung trainings after
    ``max_trials`` and ``max_epochs``, but within the time budget: once ``max_seconds`` or
    ``max_device_seconds`` is spent (these runs' device seconds count) no further run starts,
    and each recipe's figures say how many seeds it got (``seeds``; one with none stays a
    single run; ``winnow status`` says "front partly confirmed: 2/6 runs"). When the rungs
    spent the time budget themselves (a search that ``max_seconds`` ends, the usual case)
    no confirmation run starts at all: the planned runs are stored, the front stays single
    runs and ``winnow status`` says "front not confirmed: the time budget was spent before
    its 6 runs"; to confirm such a front, resume it (``winnow search resume``: ``max_seconds``
    counts each run of the engine, so the resumed one gets the whole of it again) or leave
    the rungs time, with ``max_trials`` or ``max_epochs`` ending them first. The runs are
    chosen once, when the confirmation begins: a resumed search runs those. A cancel or pause
    stops it too. Searches whose training is answered from a table (``winnow bench search``'s NB201
    oracle) refuse it: the table gives one answer per network."""

    top_k: int = Field(5, ge=1, le=MAX_KEPT_WEIGHTS)
    """The front's recipes to confirm, spread along it: each objective's best first, in the
    spec's order (the most accurate, then, say, the smallest and the fastest), then by NSGA-II's
    crowding distance (the most isolated points); with one objective, or ``top_k: 1``, the
    best on the first objective.
    They are confirmed in that order, so a time budget that runs out leaves the extremes
    confirmed first."""
    seeds: int = Field(3, ge=2, le=MAX_CONFIRM_SEEDS)
    """Further training runs per recipe, each with its own seed (at least 2: a standard
    deviation needs two)."""


class Strategy(_Strict):
    """How candidates are proposed and which evidence they must pass."""

    name: str = CASCADE
    """A sampler's name, or ``cascade`` (hashing, proxy screening, training rungs)."""
    sampler: str = "tpe"
    """The sampler a cascade wraps."""
    rungs: list[int] = [1, 3, 9]
    """Training epochs per rung of successive halving, strictly increasing, each at most
    10000."""
    reduction_factor: int = Field(3, ge=2, le=MAX_REDUCTION_FACTOR)
    """One in this many trials of a rung is promoted to the next."""
    continue_rungs: bool = True
    """A promoted candidate trains on from its last rung's checkpoint under the top rung's
    schedule (rungs ``[1, 3, 9]`` cost 9 epochs, not 13); false: each rung trains from scratch
    under its own schedule. The checkpoints lie in the artifact folder (a SQLite file's, or
    ``winnow serve --artifacts``; else a private folder under this machine's temporary
    folder), which the workers must reach. A search stored before this field existed reads as
    false (``readout.stored_defaults``)."""
    screen: Screen = Screen()
    """Zero-cost proxy screening (the cascade's)."""
    supernet: Supernet | None = None
    """The supernet stage after the screen (a cascade's; none: off)."""
    confirm: Confirm | None = None
    """Re-train the front with further seeds after the budget (none: off)."""
    reuse_across_searches: bool = True
    """Trained results of other searches on the same task count for this one."""
    pruned_window: int | None = Field(60, ge=1, le=MAX_POPULATION)
    """How many of the newest screened-out trials the sampler models (none: all); older ones
    stay stored, the sampler forgets them (an ask costs time linear in the trials it sees)."""

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, rungs: list[int]) -> list[int]:
        bad = any(not 1 <= e <= MAX_RUNG_EPOCHS for e in rungs)
        if not rungs or bad or sorted(set(rungs)) != rungs:
            raise ValueError(
                f"rungs are strictly increasing epochs in [1, {MAX_RUNG_EPOCHS}], got {rungs}"
            )
        return rungs

    @property
    def sampler_name(self) -> str:
        return self.sampler if self.name == CASCADE else self.name

    @property
    def cascade(self) -> bool:
        return self.name == CASCADE

    def name_problems(self) -> Iterator[Problem]:
        """(field, message) for an unknown strategy, sampler or proxy name."""
        from winnow.service.engine.sampling import SAMPLERS

        yield from _failures(
            {
                "name": lambda: _known_strategy(self.name, SAMPLERS.names()),
                "sampler": lambda: SAMPLERS.get(self.sampler),
            }
        )
        yield from _within("screen", self.screen.name_problems())
        if self.supernet is not None and not self.cascade:
            yield "supernet", f"the supernet stage is the cascade's, not strategy {self.name!r}'s"


class SearchSpec(_Strict):
    """One search: the space, the task, the objectives and constraints, the budget and the
    strategy (``service/search_spec.py``)."""

    name: str = Field("search", max_length=200)
    """A name to show."""
    space: str | dict[str, Any]
    """A built-in space's name, a space file's path (next to the spec file), or the space
    inline (see Search space)."""
    task: Task
    """What the candidates learn."""
    objectives: list[Objective] = [Objective(name="accuracy", direction="maximize")]
    """Distinct metrics, in order: the first ranks the exported best."""
    constraints: list[Constraint] = []
    """``METRIC OP NUMBER`` strings (``params <= 1e6``) or mappings; checked at the first
    fidelity that knows the metric, violators pruned."""
    budget: Budget = Budget()
    """When the search stops."""
    strategy: Strategy = Strategy()
    """How it searches."""
    seed: int = Field(0, ge=0, le=UINT32_MAX)
    """Seeds the sampler and every training run (the same seed trains the same network)."""
    keep_weights: int = Field(5, ge=0, le=MAX_KEPT_WEIGHTS)
    """How many completed trials keep their trained weights (``winnow export --format
    weights``): the best by Pareto rank (the front first), then by the first objective; the
    others' are deleted as better ones complete. 0: none. Kept in the server's artifact folder
    (beside a SQLite database; PostgreSQL needs ``winnow serve --artifacts DIR``)."""
    reproducible: bool = False
    """The same spec gives the same front: no results reused from other searches, and one
    training at a time, each result told before the next ask (README, "Reproducible runs")."""
    warm_start: list[dict[str, Any]] = Field([], max_length=MAX_WARM_START)
    """Candidates to try first, in this order (each an exported recipe's ``candidate``);
    ``winnow submit --warm-start recipe.json`` adds one per recipe. Each must be a candidate of
    the space."""

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw  # pydantic says what a list is
        parsed, problems = [], []
        for k, constraint in enumerate(raw):
            try:
                parsed.append(
                    _parse_constraint(constraint) if isinstance(constraint, str) else constraint
                )
            except ValueError as error:
                problems.append((f"[{k}]", str(error)))
        raise_problems(problems)
        return parsed

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

    def imports(self) -> dict[str, str]:
        """``{field: import path}`` of every piece of user code the spec names, for a server
        to check against its allowed modules (``user_code.check_import_allowed``) before it
        imports any (parsing the space imports nothing: a custom family's builder is imported
        by ``check_user_code``). Fails closed: a space that cannot be resolved raises its
        ``SpecError`` (a ValueError), since what it would import cannot be known."""
        space = self.search_space.imports()
        return {**{f"space.{k}": v for k, v in space.items()}, **self.task.imports()}

    def check_user_code(self, load: bool = True) -> None:
        """Import the space's user code (a custom family's builder) and build its least
        candidate on the meta device where the task's shape is known (stated, or from the
        dataset's arguments; with ``load``, from the dataset itself): ``SpecError`` naming
        ``space.architecture.builder`` with the builder's message. A server calls it at
        submit once ``--allow-module`` admitted the module (``load=False``: no dataset is
        read in a request handler); the engine when a search starts. A space of winnow's
        own families names no user code: nothing is imported or read. The task's trainer
        (``task.trainer``) is imported and its signature checked (``Task.check_trainer``)."""
        self.task.check_trainer()
        space = self.search_space
        if not space.imports():
            return
        shape = self.task.shape() if load else self.task.stated_shape()
        try:
            space.check_user_code(shape)
        except SpecError as error:
            raise SpecError.of("search spec", nested_problems("space", error)) from None

    def check_names(self) -> SearchSpec:
        """Resolve every name against its registry: the space (built-in, file or inline), the
        dataset, the strategy, the sampler and the proxies, and the metrics; raise
        ``SpecError`` naming each field whose name is unknown (see the module docstring for
        why this is not parsing)."""
        problems = list(self.name_problems())
        if problems:
            raise SpecError.of("search spec", problems)
        return self

    def name_problems(self) -> Iterator[Problem]:
        """(field, message) for each unknown name. A spec that failed to parse is checked by
        its sections that did parse (``_parsed_sections``: the others are not attributes)."""
        parsed = vars(self)
        if "space" in parsed:
            yield from _space_problems(self.space)
        if "task" in parsed:
            yield from _within("task", self.task.name_problems())
        if "strategy" in parsed:
            yield from _within("strategy", self.strategy.name_problems())
        if "space" in parsed and "warm_start" in parsed:
            yield from self.warm_start_problems()
        if "space" in parsed and "strategy" in parsed:
            yield from self.supernet_problems()
        yield from self.local_problems()

    def warm_start_problems(self) -> Iterator[Problem]:
        """Each warm start must be a candidate the space can propose (Optuna enqueues it by
        the space's own parameters); the message says which field differs."""
        if not self.warm_start:
            return
        from winnow.search_space.candidate import Candidate

        try:
            space = self.search_space
        except ValueError:
            return  # the space's own problems are reported by _space_problems
        for k, data in enumerate(self.warm_start):
            try:
                space.validate_candidate(Candidate(**data))
            except ValueError as error:
                yield f"warm_start[{k}]", f"not a candidate of the space: {error}"

    def supernet_problems(self) -> Iterator[Problem]:
        """``strategy.supernet`` needs a supernet registered for the space's family
        (``winnow.supernet.registry.SUPERNETS``) that can cover the space."""
        if self.strategy.supernet is None:
            return
        from winnow.supernet.registry import SUPERNETS

        try:
            family = self.search_space.architecture.family
        except ValueError:
            return  # the space's own problems are reported by _space_problems
        if family not in SUPERNETS:
            allowed = ", ".join(SUPERNETS.names())
            message = f"family {family!r} has no supernet yet; families with one: {allowed}"
            yield "strategy.supernet", message
            return
        entry = SUPERNETS.get(family)
        try:  # a space the family's supernet cannot cover (an mlp space of no sliceable norm)
            entry.covers(self.search_space)
        except ValueError as error:
            yield "strategy.supernet", str(error)
        if self.strategy.supernet.cells_per_stage is not None and entry.resize is None:
            allowed = ", ".join(n for n in SUPERNETS.names() if SUPERNETS.get(n).resize)
            message = (
                f"family {family!r}'s supernet has no cells per stage to set (families whose "
                f"supernet has: {allowed}); leave it out"
            )
            yield "strategy.supernet.cells_per_stage", message

    def local_problems(self) -> Iterator[Problem]:
        """The checks past the shape that need no registry (no torch), so that the client
        SDK makes them too: the budget against the rungs, the metrics' names."""
        parsed = vars(self)
        if "budget" in parsed and "strategy" in parsed:
            yield from self.budget_problems()
        yield from self.metric_problems(parsed)

    def budget_problems(self) -> Iterator[Problem]:
        """A ``max_epochs`` below the first rung's epochs would start nothing: the search
        would end ``failed`` without training a single candidate."""
        first, cap = self.strategy.rungs[0], self.budget.max_epochs
        if cap is not None and cap < first:
            message = f"{cap} is below the first rung's {first} epochs: no candidate could train"
            yield "budget.max_epochs", message

    def metric_problems(self, parsed: dict[str, Any]) -> Iterator[Problem]:
        """Objectives and constraints must name a metric a trained result carries: any other
        name would fail every trial (an objective) or never be checked (a constraint)."""
        allowed = ", ".join(TRAIN_METRICS)
        objectives = enumerate(parsed.get("objectives", []))
        constraints = enumerate(parsed.get("constraints", []))
        named = [(f"objectives[{k}].name", o.name) for k, o in objectives]
        named += [(f"constraints[{k}]", c.metric) for k, c in constraints]
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


def _failures(checks: dict[str, Callable[[], object]]) -> Iterator[Problem]:
    """(field, message) for each check that raises ``ValueError`` (a registry's unknown name,
    an invalid space: its own problems, under the field)."""
    for field, check in checks.items():
        try:
            check()
        except ValueError as error:
            yield from nested_problems(field, error)


def _space_problems(space: str | dict[str, Any]) -> Iterator[Problem]:
    """An inline space's problems are the spec's own fields (``space.architecture.family``);
    a space file's say which file."""
    try:
        SearchSpec.resolve_space(space)
    except SpecFileError as error:
        if not error.problems:
            yield "space", str(error)
        for field, message in error.problems:
            yield join_field("space", field), f"{message} (in {error.path})"
    except ValueError as error:
        yield from nested_problems("space", error)


def _known_strategy(name: str, samplers: list[str]) -> None:
    if name != CASCADE and name not in samplers:
        allowed = ", ".join([*samplers, CASCADE])
        raise ValueError(f"unknown strategy {name!r}; allowed: {allowed}")


def _within(parent: str, problems: Iterator[Problem]) -> Iterator[Problem]:
    return ((join_field(parent, field), message) for field, message in problems)


def _parse_constraint(text: str) -> dict[str, Any]:
    match = _CONSTRAINT.match(text)
    if not match:
        raise ValueError(
            f"constraint {text!r} is not 'METRIC OP NUMBER' with OP one of {', '.join(OPERATORS)}"
        )
    metric, op, value = match.groups()
    return {"metric": metric, "op": op, "value": float(value)}


def parse_search_spec(data: dict[str, Any], check_names: bool = True) -> SearchSpec:
    """A spec from its mapping; ``check_names=False`` checks its shape and what needs no
    registry only (no torch: ``SearchSpec.local_problems``).

    One ``SpecError`` lists every problem: the shape's, and the names' of every section that
    has the right shape, so that a spec is fixed in one round, not one stage at a time."""
    try:
        spec, problems = SearchSpec.model_validate(data), []
    except ValidationError as error:
        spec, problems = None, validation_problems(error, SearchSpec)
    checked = spec or _parsed_sections(data, problems)
    problems += checked.name_problems() if check_names else checked.local_problems()
    if problems:
        raise SpecError.of("search spec", problems)
    return spec


def _parsed_sections(data: dict[str, Any], problems: list[Problem]) -> SearchSpec:
    """The top-level sections of a spec that failed to parse which have no problem of their
    own, validated one by one (pydantic's ``validate_assignment`` runs a field's validators);
    the sections at fault are left out (not attributes), defaults stand in for absent ones."""
    partial = SearchSpec.model_construct()
    at_fault = {_section(field) for field, _ in problems}
    for name in SearchSpec.model_fields:
        if name in data and name not in at_fault:
            try:
                SearchSpec.__pydantic_validator__.validate_assignment(partial, name, data[name])
            except ValidationError:  # at fault only with the others (a model-level check)
                vars(partial).pop(name, None)
    return partial


def valid_sections(data: dict[str, Any]) -> dict[str, Any]:
    """The top-level sections of ``data`` that validate on their own (absent ones are left
    out, not defaulted: a default is not what the search had): what a stored spec that
    today's code no longer accepts still shows (``readout.stored_spec``)."""
    return {k: v for k, v in vars(_parsed_sections(data, [])).items() if k in data}


def _section(field: str) -> str:
    return re.split(r"[.\[]", field, maxsplit=1)[0]


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
        raise SpecFileError(file, str(error), error.problems) from None
