"""Plain value types that move between the engine and workers (cf. OSS Vizier's pyvizier).

``TrialSpec`` is what a worker is asked to do; ``TrialResult`` is what it returns. Neither
knows about storage or transport. ``Status`` and ``Fidelity`` live in ``winnow.records`` (no
torch) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from winnow.records import STAGES, Fidelity, Status
from winnow.search_space.candidate import Candidate

__all__ = ["STAGES", "EpochCallback", "Fidelity", "Status", "TrialResult", "TrialSpec"]

# (epoch, epochs, mean train loss, the epoch's seconds): what a training trial reports after
# each epoch, to whoever submitted it (``Executor.submit(spec, on_epoch)``)
EpochCallback = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class TrialSpec:
    """Evaluate ``candidate`` on ``dataset`` at one fidelity (``stage``, ``epochs``, ``steps``).

    ``proxies`` names the zero-cost proxies of a ``proxy`` stage (``None``: all of them);
    ``keep_weights`` asks a ``train`` trial to return its trained weights in the result
    (``TrialResult.weights``: the bytes travel with the result, so that a worker on another
    machine, e.g. a Ray node, keeps them too; the engine writes them to the store's
    artifacts); ``options``: a stage's own settings as canonical JSON (the supernet stages':
    the space, the supernet settings and its files), None for the others.

    ``schedule_epochs``: the length of a ``train`` trial's learning-rate schedule (None: its
    ``epochs``), and ``checkpoint``: a file path its worker resumes from (when the file holds
    this training's state) and saves to after every epoch, so ``epochs`` is the total the
    network reaches. Continued rungs set both (the top rung's schedule; the candidate's file
    in the search's artifact folder, which the worker must be able to reach).

    ``trainer``: a ``train`` trial's training function, the user's ``task.trainer``
    (``"pkg.mod:fit"``, imported by the worker; ``search_space/trainer.py``), None for
    winnow's own loop. ``epoch_accuracy``: measure the test accuracy after every epoch too
    (``task.eval_every_epoch``; ``TrialResult.accuracy_curve``; on by default, as it is for
    the task, ``TrainData`` and ``training.train``), which changes no trained result (it
    costs time: under a time budget, fewer trials)."""

    candidate: Candidate
    dataset: str
    stage: str = "train"
    epochs: int = 1
    steps: int | None = None
    seed: int = 0
    device: str = "cpu"
    proxies: tuple[str, ...] | None = None
    keep_weights: bool = False
    options: str | None = None
    schedule_epochs: int | None = None
    checkpoint: str | None = None
    trainer: str | None = None
    epoch_accuracy: bool = True

    @property
    def fidelity(self) -> Fidelity:
        return Fidelity(self.stage, self.epochs, self.steps, self.proxies)


@dataclass
class TrialResult:
    """What a trial returned: ``metrics`` (numbers), the training ``loss_curve``, ``error``
    (why it failed, or what failed in part) and ``value``: a stage's one non-numeric answer
    (the ``hash`` stage's functional hash; None for the other stages and for results stored
    before the field existed); ``weights``: the trained ``state_dict`` as ``torch.save`` bytes
    when the spec asked to keep them (never stored with the result: see ``TrialSpec``);
    ``accuracy_curve``: a ``train`` trial's test accuracy after each epoch of ``loss_curve``
    (empty when not measured), the learning curve the dashboard draws."""

    status: Status
    metrics: dict[str, float] = field(default_factory=dict)
    loss_curve: list[float] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    device: str = "cpu"
    host: str | None = None  # the machine that ran it (set by process and cluster workers)
    value: str | None = None
    weights: bytes | None = field(default=None, repr=False)
    accuracy_curve: list[float] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, Any]:
        """Flat JSON for the CLI: status, every metric at top level, loss curve, error."""
        out: dict[str, Any] = {"status": str(self.status), **self.metrics}
        out["loss_curve"] = self.loss_curve
        if self.accuracy_curve:
            out["accuracy_curve"] = self.accuracy_curve
        if self.error is not None:
            out["error"] = self.error
        if self.value is not None:
            out["value"] = self.value
        out["seconds"] = round(self.seconds, 3)
        out["device"] = self.device
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the equivalence cache stores it): the weights are left out, they are
        kept as an artifact of the trial that trained them."""
        out = {**asdict(self), "status": str(self.status)}
        out.pop("weights")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        """The inverse of :meth:`to_dict` (e.g. a result read back from the store)."""
        return cls(**{**data, "status": Status(data["status"])})
