"""A recipe's four axes as small tables, and its network as its family shows it
(``readout.architecture_view``: e.g. the nb201 cell as a graph, the macro network's stages or
the MLP's layers as a table)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from winnow.service.engine import readout


def _pairs(values: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"field": list(values), "value": [str(v) for v in values.values()]})


def axis_tables(candidate: dict[str, Any]) -> dict[str, pd.DataFrame]:
    quant = dict(candidate.get("quantization") or {})
    bits = quant.pop("weight_bits", 32)
    bits = bits if isinstance(bits, dict) else {"*": bits}
    quant |= {f"weight bits {slot}": b for slot, b in bits.items()}
    arch = readout.architecture_view(candidate.get("architecture", {})).fields
    return {
        "Architecture": _pairs(arch),
        "Normalization": _pairs({"layer": candidate.get("normalization", "?")}),
        "Optimizer": _pairs(candidate.get("optimizer") or {}),
        "Quantization": _pairs(quant),
    }


def architecture(arch: dict[str, Any]) -> None:
    """The family's view of the network: a graph with its caption, or a table (else the raw
    fields)."""
    view = readout.architecture_view(arch)
    if view.graph:
        st.graphviz_chart(view.graph)
    if view.table:
        st.dataframe(pd.DataFrame(view.table), hide_index=True)
    if view.caption:
        st.caption(view.caption)
    if not (view.graph or view.table):
        st.json(arch)
