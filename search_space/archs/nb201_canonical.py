"""Canonical form of a NAS-Bench-201 cell: equal exactly for cells that compute the same function.

Rules (the structural hash of "Unified Functional Hashing", Gillard et al., for this space):

- a node fed only by ``none`` edges (or by edges from zero nodes) is zero, and an op applied to a
  zero node is zero (``avg_pool`` and ``skip_connect`` of zero are zero; ``nor_conv`` of zero is
  taken as zero too: ReLU(0) = 0, a bias-free conv of 0 is 0, and the norm's shift is ignored, as
  the hashing issue specifies);
- ``skip_connect`` is the identity, so sums flatten: a node is a multiset of terms;
- ``avg_pool_3x3`` (stride 1, ``count_include_pad=False``) is linear, so it distributes over a
  sum: ``pool(a + b) = pool(a) + pool(b)``;
- ops whose output never reaches node 3 are dropped (they are not in the output expression);
- every ``nor_conv`` edge is a module with its own weights: two convs on the same input are two
  terms, not one. Modules are labelled, and the canonical string is the smallest rendering over
  the labellings of interchangeable modules (same op, same input): isomorphic cells, and only
  they, give the same string;
- commutative sums are sorted.

A module's rendering can carry an attribute (its weight bits), so that per-layer quantization
bits enter the canonical form at the module's canonical place, not at its edge index.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# The cell's DAG (nb201.py builds it; defined here, where no torch is needed): node i sums one
# op on every earlier node j < i. Edge e goes from node EDGES[e][0] to node EDGES[e][1], in
# arch-string order.
NUM_NODES = 4
EDGES = tuple((j, i) for i in range(1, NUM_NODES) for j in range(i))

# A term of a node's sum: "x" (the cell input), ("pool", term), or ("conv", op, edge, inputs)
# where inputs is the tuple of terms summed into the conv's input.
Term = object


def _apply(op: str, edge: int, node: list[Term]) -> list[Term]:
    if op == "skip_connect":
        return list(node)
    if op == "avg_pool_3x3":
        return [("pool", t) for t in node]
    return [("conv", op, edge, tuple(node))]


@functools.lru_cache(maxsize=65536)
def output_terms(ops: tuple[str, ...]) -> tuple[Term, ...]:
    """The cell output (node 3) as a flat multiset of terms."""
    nodes: list[list[Term]] = [["x"]]
    for target in range(1, NUM_NODES):
        terms: list[Term] = []
        for edge, ((source, t), op) in enumerate(zip(EDGES, ops, strict=True)):
            if t == target and op != "none" and nodes[source]:
                terms += _apply(op, edge, nodes[source])
        nodes.append(terms)
    return tuple(nodes[-1])


def live_conv_edges(ops: tuple[str, ...]) -> frozenset[int]:
    """Edges whose conv module reaches the output."""
    found: set[int] = set()

    def visit(term: Term) -> None:
        if isinstance(term, tuple):
            if term[0] == "conv":
                found.add(term[2])
                for t in term[3]:
                    visit(t)
            else:
                visit(term[1])

    for term in output_terms(ops):
        visit(term)
    return frozenset(found)


def _render(term: Term, label: Mapping[int, str]) -> str:
    if term == "x":
        return "x"
    if term[0] == "pool":
        return f"pool({_render(term[1], label)})"
    _, op, edge, inputs = term
    return f"{op.removeprefix('nor_')}{label[edge]}({_sum(inputs, label)})"


def _sum(terms: Sequence[Term], label: Mapping[int, str]) -> str:
    return "+".join(sorted(_render(t, label) for t in terms)) or "0"


@dataclass(frozen=True)
class CanonicalCell:
    form: str  # the canonical string of the cell's function
    positions: dict[int, str]  # live conv edge -> its module's canonical name


def canonical_cell(ops: tuple[str, ...], attrs: Mapping[int, str] | None = None) -> CanonicalCell:
    """Canonical form of a cell; ``attrs`` (edge -> text) marks conv modules, e.g. their bits."""
    attrs = attrs or {}
    return _canonical_cell(tuple(ops), tuple(sorted(attrs.items())))


@functools.lru_cache(maxsize=65536)
def _canonical_cell(ops: tuple[str, ...], attrs: tuple[tuple[int, str], ...]) -> CanonicalCell:
    terms = output_terms(ops)
    live = sorted(live_conv_edges(ops))
    attr = dict(attrs)
    unlabeled = {e: f"@{attr.get(e, '')}" for e in live}
    signature = {e: _module_signature(e, terms, unlabeled) for e in live}
    groups: dict[str, list[int]] = {}
    for e in live:
        groups.setdefault(signature[e], []).append(e)
    best: tuple[str, dict[int, str]] | None = None
    for perms in itertools.product(*(itertools.permutations(g) for g in groups.values())):
        label = {e: f"#{i}@{attr.get(e, '')}" for perm in perms for i, e in enumerate(perm)}
        form = _sum(terms, label)
        if best is None or form < best[0]:
            best = (form, label)
    form, label = best if best else (_sum(terms, {}), {})
    positions = {e: _render(_find(terms, e), label) for e in live}
    return CanonicalCell(form, positions)


def _find(terms: Sequence[Term], edge: int) -> Term:
    for term in terms:
        if isinstance(term, tuple):
            if term[0] == "conv" and term[2] == edge:
                return term
            inner = term[3] if term[0] == "conv" else (term[1],)
            found = _find(inner, edge)
            if found is not None:
                return found
    return None


def _module_signature(edge: int, terms: Sequence[Term], unlabeled: Mapping[int, str]) -> str:
    """The module's rendering without labels: modules sharing it may be interchangeable."""
    return _render(_find(terms, edge), unlabeled)
