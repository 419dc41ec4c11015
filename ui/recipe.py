"""A recipe's four axes as small tables, and its network: the nb201 cell as a graph, the
macro network's stages or the MLP's layers as a table."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from winnow.ui.charts import nb201_dot


def _pairs(values: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"field": list(values), "value": [str(v) for v in values.values()]})


def axis_tables(candidate: dict[str, Any]) -> dict[str, pd.DataFrame]:
    quant = dict(candidate.get("quantization") or {})
    bits = quant.pop("weight_bits", 32)
    bits = bits if isinstance(bits, dict) else {"*": bits}
    quant |= {f"weight bits {slot}": b for slot, b in bits.items()}
    arch = {k: v for k, v in candidate.get("architecture", {}).items() if k != "cell"}
    return {
        "Architecture": _pairs(arch),
        "Normalization": _pairs({"layer": candidate.get("normalization", "?")}),
        "Optimizer": _pairs(candidate.get("optimizer") or {}),
        "Quantization": _pairs(quant),
    }


def stage_table(arch: dict[str, Any]) -> pd.DataFrame:
    """The macro network's stages: depth, kernel, expand ratio, channels and stride each."""
    width = arch.get("width_mult", 1.0)
    return pd.DataFrame(
        {
            "stage": range(len(arch["depths"])),
            "blocks": arch["depths"],
            "kernel": arch["kernel_sizes"],
            "expand": arch["expand_ratios"],
            "channels": [round(c * width) for c in arch.get("base_channels", [])]
            or [None] * len(arch["depths"]),
            "stride": arch.get("strides") or [None] * len(arch["depths"]),
        }
    )


def layer_table(arch: dict[str, Any]) -> pd.DataFrame:
    """The MLP's hidden layers (then the classifier head)."""
    depth, width = arch.get("depth", 1), arch.get("width")
    layers = [f"hidden.{i}" for i in range(depth)] + ["head"]
    return pd.DataFrame(
        {
            "layer": layers,
            "out features": [width] * depth + ["classes"],
            "activation": [arch.get("activation", "")] * depth + [""],
        }
    )


def architecture(arch: dict[str, Any]) -> None:
    family = arch.get("family")
    if family == "nb201":
        st.graphviz_chart(nb201_dot(arch["cell"]))
        st.caption(
            f"cell `{arch['cell']}`: node 0 is the cell's input, node 3 its output; "
            f"`none` edges carry nothing and are not drawn. {arch.get('cells_per_stage')} "
            f"cells per stage, {arch.get('channels')} channels."
        )
    elif family == "macro":
        st.dataframe(stage_table(arch), hide_index=True)
    elif family == "mlp":
        st.dataframe(layer_table(arch), hide_index=True)
    else:
        st.json(arch)
