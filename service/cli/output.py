"""What every command group prints the same way."""

from __future__ import annotations

import json
from typing import Any

from winnow.records import SearchStatus


def search_exit_code(status: str) -> int:
    """A command that followed or read a search exits 1 when it failed or was cancelled."""
    return 1 if status in (SearchStatus.FAILED, SearchStatus.CANCELLED) else 0


def print_json(obj: Any) -> None:
    """One JSON object on one line, keys sorted, flushed (scripts read it as it comes)."""
    print(json.dumps(obj, sort_keys=True), flush=True)
