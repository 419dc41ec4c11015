"""``Candidate``: one frozen point of a search space, and what it builds.

A candidate is a plain value: its canonical JSON (sorted keys, no spaces) names it and its
``key`` (a SHA-256 prefix of that JSON) identifies it across processes and runs. It builds its
network (with its normalization at every norm position and its quantization policy applied) and
its optimizer. Structural and functional hashes, which also merge *equivalent* candidates, are a
separate concern (``winnow.search_space.hashing``, later).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from winnow.search_space.archs import FAMILIES
from winnow.search_space.norms import NORMS
from winnow.search_space.optimizers import OPTIMIZERS, build_optimizer
from winnow.search_space.quantization import QuantPolicy, apply_quantization

# Optimizer-axis fields that are not hyperparameters of the optimizer itself.
TRAINING_FIELDS = ("name", "schedule", "warmup_epochs", "batch_size")


class Candidate(BaseModel):
    """One recipe: architecture, normalization, optimizer (+ schedule, batch size), quantization."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    architecture: dict[str, Any]
    normalization: str = "batchnorm"
    optimizer: dict[str, Any] = {"name": "sgd"}
    quantization: QuantPolicy = QuantPolicy()

    @field_validator("architecture")
    @classmethod
    def _known_family(cls, arch: dict[str, Any]) -> dict[str, Any]:
        FAMILIES.get(arch.get("family", "<missing>"))
        return arch

    @field_validator("normalization")
    @classmethod
    def _known_norm(cls, name: str) -> str:
        NORMS.get(name)
        return name

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, optimizer: dict[str, Any]) -> dict[str, Any]:
        entry = OPTIMIZERS.get(optimizer.get("name", "<missing>"))
        unknown = set(optimizer) - set(TRAINING_FIELDS) - set(entry.defaults)
        if unknown:
            raise ValueError(
                f"{sorted(unknown)} are not hyperparameters of {entry.name}; "
                f"allowed: {', '.join(entry.defaults)}"
            )
        return optimizer

    # --- identity ---------------------------------------------------------------------------

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> Candidate:
        return cls.model_validate_json(text)

    def describe(self) -> str:
        """A one-line human summary, e.g. for progress output."""
        arch = self.architecture
        arch_text = arch.get("cell") or ",".join(
            f"{k}={v}" for k, v in arch.items() if k not in ("family", "base_channels", "strides")
        )
        q = self.quantization
        bits = "/".join(str(b) for b in dict.fromkeys(q.weight_bits.values()))
        return (
            f"{arch['family']}[{arch_text}] {self.normalization} {self.optimizer['name']}"
            f"(lr={self.optimizer.get('lr', 'default')}) w{bits}a{q.activation_bits}"
        )

    # --- building ---------------------------------------------------------------------------

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {k: v for k, v in self.optimizer.items() if k not in TRAINING_FIELDS}

    @property
    def batch_size(self) -> int:
        return int(self.optimizer.get("batch_size", 128))

    def build_model(self, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        """The network, with this candidate's norm everywhere and its quantization applied."""
        family = FAMILIES.get(self.architecture["family"])
        model = family.build(self.architecture, self.normalization, num_classes, tuple(input_shape))
        return apply_quantization(model, self.quantization)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(self.optimizer["name"], model.parameters(), self.hyperparameters)
