"""The ``weights`` export format: the trial's trained weights as ``weights.pt`` (the
``state_dict`` of the network ``Candidate.build_model`` makes, CPU tensors saved with
``torch.save``; it loads with ``strict=True``) and its ``recipe.json`` for context.

The weights are the file the search kept for the trial (``engine.weights``: top-rung runs of
the best ``keep_weights`` completed trials), named by the recipe's private ``artifacts``
entry (``readout.recipe``). The file is sent as it is: no torch here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from winnow.service.export import recipe as recipe_format
from winnow.service.export.errors import ExportError

FILE_NAME = "weights.pt"
# The bundle travels in one gRPC reply, which the server caps at 8 MiB
# (``api.server.MAX_MESSAGE_BYTES``); the recipe and the message's framing take the rest.
MAX_WEIGHTS_BYTES = (8 << 20) - (256 << 10)


def files(recipe: dict[str, Any]) -> dict[str, bytes]:
    return {FILE_NAME: read_kept(recipe), **recipe_format.files(recipe)}


def read_kept(recipe: dict[str, Any]) -> bytes:
    """The kept weights' bytes, read once (retention may delete the file meanwhile), or
    ``ExportError`` saying why there are none to send. Messages name the file relative to the
    artifact folder: the server's paths stay on the server."""
    path, trial = kept_path(recipe), recipe.get("trial_id")
    name = "/".join(path.parts[-2:])  # <search id>/<row id>.pt
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_WEIGHTS_BYTES:
                raise ExportError(
                    f"trial {trial}'s weights ({size / 2**20:.1f} MiB) do not fit one export "
                    f"reply ({MAX_WEIGHTS_BYTES / 2**20:.1f} MiB); copy {name} from the server's "
                    "artifact folder (winnow serve --artifacts)"
                )
            return file.read()
    except FileNotFoundError:
        raise ExportError(
            f"trial {trial}'s weights file {name} is gone from the server's artifact folder "
            "(dropped by retention since, deleted by hand, or the database moved without it); "
            "export again to see which trials keep theirs"
        ) from None


def kept_bytes(recipe: dict[str, Any]) -> bytes | None:
    """The kept weights' file as bytes when the search kept them and they fit a reply, else
    None: for the bundles that carry the weights when there are some (``pytorch``)."""
    try:
        return read_kept(recipe)
    except ExportError:
        return None


def kept_path(recipe: dict[str, Any]) -> Path:
    """The kept weights' file, or ``ExportError`` with why none was kept."""
    artifacts = recipe.get("artifacts") or {}
    if artifacts.get("weights") is None:
        raise ExportError(
            artifacts.get("missing") or f"trial {recipe.get('trial_id')}'s weights were not kept"
        )
    return Path(artifacts["weights"])
