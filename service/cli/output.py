"""What every command group prints the same way."""

from __future__ import annotations

import json
from typing import Any


def print_json(obj: Any) -> None:
    """One JSON object on one line, keys sorted, flushed (scripts read it as it comes)."""
    print(json.dumps(obj, sort_keys=True), flush=True)
