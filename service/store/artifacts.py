"""Trial artifacts: the trained weights a search keeps, as files in one folder beside the
database (``<db>.artifacts/<search id>/<trial row id>.pt`` for a SQLite store; any folder
with ``winnow serve --artifacts DIR``, which a PostgreSQL store needs: without it no weights
are kept). The trial row records the file's path (``TrialRecord.weights_path``). Continued
rungs keep each live candidate's training checkpoint beside them
(``<search id>/<candidate number>.ckpt``, ``search_space/checkpoints.py``).

A file is written under a temporary name and renamed into place (``os.replace`` is atomic on
one file system), so a process killed mid-write leaves at most a ``.tmp`` file that no row
names and that the next write of that trial replaces; a search's engine sweeps such files
away when it starts (``sweep``). No SQL and no torch here: the bytes are
made by the worker (``training.serialize_weights``) and read back by the ``weights`` exporter.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy.engine import make_url

SUFFIX = ".pt"
CHECKPOINT_SUFFIX = ".ckpt"  # as search_space.checkpoints writes them


def default_root(url: str) -> Path | None:
    """Where a store keeps artifacts unless told: beside a SQLite file (``x.db`` →
    ``x.db.artifacts``); None (kept nowhere) for an in-memory SQLite or a server database,
    whose machine the search server may not share."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = Path(parsed.database).expanduser().absolute()
    return database.with_name(database.name + ".artifacts")


class Artifacts:
    """The artifact folder of one store (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def path(self, search_id: str, row_id: int) -> Path:
        return self.root / search_id / f"{row_id}{SUFFIX}"

    def supernet(self, key: str, suffix: str = SUFFIX) -> Path:
        """A trained supernet's file (``.pt``), or its training checkpoint (``.ckpt``): one
        folder for all searches, since every search on the task reuses it."""
        return self.root / "supernets" / f"{key}{suffix}"

    def checkpoint(self, search_id: str, number: int) -> Path:
        """The training checkpoint of candidate ``number`` of a search whose rungs continue
        (written by the worker that trains it, after every epoch)."""
        return self.root / search_id / f"{number}{CHECKPOINT_SUFFIX}"

    def delete_checkpoints(self, search_id: str) -> list[Path]:
        """Delete every training checkpoint of a search (its end), temporary ones included."""
        folder = self.root / search_id
        files = folder.iterdir() if folder.is_dir() else ()
        found = [p for p in files if CHECKPOINT_SUFFIX in p.name]
        for path in found:
            self.delete(str(path))
        return found

    def write(self, search_id: str, row_id: int, data: bytes) -> str:
        """Store one trial's weights; returns the path to record. Complete or absent: see the
        module docstring."""
        final = self.path(search_id, row_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(final.name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name says complete
        os.replace(temporary, final)
        return str(final)

    def sweep(self, search_id: str, named: set[str]) -> list[Path]:
        """Delete the files of ``search_id``'s folder that no row names (``named``: the paths
        its rows record): what a kill left mid-write, or after the write and before the row.
        Only while no write of that search is in flight (its engine calls it on start)."""
        folder = self.root / search_id
        files = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
        stray = [p for p in files if str(p) not in named]
        for path in stray:
            self.delete(str(path))
        return stray

    @staticmethod
    def delete(path: str) -> None:
        """Remove a kept file (one already gone is no error: the row is cleared either way)."""
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()
