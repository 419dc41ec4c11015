"""Structural hashing: a canonical form of a candidate, equal for candidates known to compute
the same function (microseconds per candidate).

What the canonical form keeps, axis by axis:

- architecture: the family's canonical form (``Family.canonical``); for nb201 the canonical cell
  string of ``archs/nb201_canonical.py`` (dead ops dropped, identities and linear pooling folded,
  sums sorted, isomorphic cells equal);
- normalization: the name;
- optimizer: the chosen optimizer's hyperparameters, the schedule, warmup and batch size (the
  candidate never holds an optimizer option it did not choose); ``nesterov`` is dropped when
  ``momentum`` is 0, where it does nothing;
- quantization: the weight bits of every *live* quantizable layer, at its canonical place (bits
  of pruned layers are dropped); granularity only when some live weight is quantized, symmetric
  and activation bits only when something is quantized.

Guarantees: equal structural hashes mean the same function, up to the rules above (and a SHA-256
collision). Equivalences that need arithmetic to see (AdamW with zero decay vs Adam, 32-bit
"quantization" at 32 bits vs none at all is already folded here) are the functional hash's job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from winnow.search_space.archs import FAMILIES
from winnow.search_space.candidate import Candidate
from winnow.search_space.quantization import FLOAT_BITS

HASH_CHARS = 16


def digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def canonical_optimizer(optimizer: dict[str, Any]) -> dict[str, Any]:
    canonical = dict(optimizer)
    if canonical.get("name") == "sgd" and canonical.get("momentum") == 0:
        canonical.pop("nesterov", None)
    return canonical


def canonical_form(candidate: Candidate) -> dict[str, Any]:
    """The candidate with everything that cannot change its function removed or folded."""
    policy = candidate.quantization
    family = FAMILIES.get(candidate.architecture["family"])
    arch, live_bits = family.canonical(candidate.architecture, policy.bits_for)
    weights_quantized = any(bits < FLOAT_BITS for bits in live_bits)
    quant: dict[str, Any] = {}
    if weights_quantized:
        quant["granularity"] = policy.granularity
    if weights_quantized or policy.activation_bits < FLOAT_BITS:
        quant |= {"activation_bits": policy.activation_bits, "symmetric": policy.symmetric}
    return {
        "architecture": arch,
        "normalization": candidate.normalization,
        "optimizer": canonical_optimizer(candidate.optimizer),
        "quantization": quant,
    }


def structural_hash(candidate: Candidate) -> str:
    return digest(canonical_form(candidate))
