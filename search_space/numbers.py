"""Number types shared by the spec models (pydantic only: no torch or optuna, so that the
client SDK's spec parsing can use them)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# A float that is a number: NaN or an infinity anywhere in a spec is refused (a NaN compares
# false with everything: a NaN constraint prunes every candidate, a NaN reference makes the
# hypervolume 0; an infinite range cannot be sampled).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

INT32_MAX = 2**31 - 1  # the API's Progress counters are protobuf int32
UINT32_MAX = 2**32 - 1  # numpy's seeds
