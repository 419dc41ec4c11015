"""Continued rungs (``strategy.continue_rungs``): which file each candidate's training continues
from, how many epochs a rung runs, and when a file is no longer needed.

Every rung of a candidate trains one network under the top rung's schedule, so rung ``r``'s
first epochs are the top rung's first epochs; its worker resumes from the candidate's
checkpoint (``Artifacts.checkpoint``: one file per candidate in the search's artifact folder,
saved after every epoch by ``training.fit``) and trains ``rungs[r] - rungs[r - 1]`` epochs.
The path is fixed by the candidate's number, so a resumed engine finds the file, and a rung
re-queued after a kill goes on from the last epoch that ended. The worker must reach the
folder (the local pool's processes do; Ray workers on other machines need it on a shared file
system: a worker that cannot write it trains on, and the next rung starts from epoch 0).

A file is deleted when its candidate can no longer be promoted: its training failed or was
pruned, it completed the top rung, or its rung is *settled* (no more results can reach it:
nothing more is proposed or trained below it and nothing is promotable into it) without it among
the promotable; and at the end of a search (a paused one keeps them for its resume). The
engine's start-up sweep (``Artifacts.sweep``) deletes the files of candidates not in play.
Without an artifact folder, or with one rung, rungs train from scratch as with the setting off.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from winnow.records import Status, TrialRecord
from winnow.service.engine.readout import rung_starts
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.search_spec import SearchSpec
from winnow.service.store import Store
from winnow.service.store.artifacts import Artifacts

log = logging.getLogger("winnow.engine")
TEMP_FOLDER = "winnow-checkpoints"


class RungCheckpoints:
    """One search's continued-rung checkpoints (see the module docstring)."""

    def __init__(self, spec: SearchSpec, store: Store, search_id: str) -> None:
        self.search_id = search_id
        self.rungs = list(spec.strategy.rungs)
        self.starts = rung_starts(spec.strategy)
        self.enabled = spec.strategy.continue_rungs and len(self.rungs) > 1
        # a store without an artifact folder (PostgreSQL without --artifacts): a private folder
        # of this user's under the temporary folder, which the local pool's workers share and
        # a kill leaves in place
        self.folder = store.artifacts or (Artifacts(private_folder()) if self.enabled else None)
        self.released: set[int] = set()  # candidates whose file is deleted for good

    def path(self, number: int) -> str | None:
        """Candidate ``number``'s checkpoint file (None: rungs train from scratch)."""
        return str(self.folder.checkpoint(self.search_id, number)) if self.enabled else None

    def schedule_epochs(self) -> int | None:
        """The length of every rung's schedule: the top rung's (None: each rung's own)."""
        return self.rungs[-1] if self.enabled else None

    def claim(self, number: int) -> str | None:
        """``path(number)`` for a run about to train candidate ``number``: a file released
        before (e.g. a promotion of a resumed search) is the candidate's again, deleted later."""
        self.released.discard(number)
        return self.path(number)

    def epochs_to_run(self, rung: int, number: int | None = None) -> int:
        """The epochs a run at ``rung`` trains: from its last rung's end, or the whole
        ``rungs[rung]`` from epoch 0 when candidate ``number``'s file is absent though the
        search's workers write files (its folder exists: a file lost, or not written by a
        worker that could not reach it). Workers that write none (an oracle answering from a
        table) are taken to continue. Where the guess is wrong (a file of another tag, a first
        promotion whose worker could write nothing) the engine corrects the count by the run's
        ``epochs_run`` when it ends, and ``budget.max_epochs`` may be passed by that run."""
        if self.starts[rung] and number is not None and self.enabled:
            path = Path(self.path(number))
            if path.parent.is_dir() and not path.is_file():
                return self.rungs[rung]
        return self.rungs[rung] - self.starts[rung]

    def release(self, number: int) -> None:
        """Delete candidate ``number``'s file: it will never be promoted again."""
        path = self.path(number)
        if path is None or number in self.released:
            return
        self.released.add(number)
        Artifacts.delete(path)
        log.debug("search %s: trial %d's checkpoint deleted", self.search_id, number)

    def release_settled(
        self, ladder: SuccessiveHalving, busy: Iterable[int], proposing: bool
    ) -> None:
        """Delete the files of candidates left on a settled rung, not promoted nor promotable.
        ``busy``: the rungs of runs in flight or re-queued; ``proposing``: new candidates may
        still reach the first rung."""
        if not self.enabled:
            return
        busy = set(busy)
        fed = proposing  # whether results can still reach the rung
        for rung in range(ladder.top):
            fed = fed or rung in busy or (rung > 0 and bool(ladder.promotable(rung - 1)))
            if fed:
                return  # every rung above is fed through this one
            keep = ladder.promoted[rung] | set(ladder.promotable(rung))
            for number in set(ladder.results[rung]) - keep:
                self.release(number)

    def release_all(self) -> None:
        """The search ended: delete every checkpoint of its folder."""
        if self.enabled:
            self.folder.delete_checkpoints(self.search_id)


def private_folder() -> Path:
    """``<temp>/winnow-checkpoints-<uid>``, made mode 0700 and checked to be this user's own
    directory (not a link, not readable or writable by others): the checkpoints are loaded by
    the workers, so nobody else may plant or swap one. A path someone else took falls back to
    a fresh ``tempfile.mkdtemp`` folder (private too; a resumed engine then trains the
    interrupted rungs again from their start)."""
    folder = Path(tempfile.gettempdir()) / f"{TEMP_FOLDER}-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
    except OSError:
        info = None
    private = (
        info is not None
        and stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & 0o077
    )
    if private:
        return folder
    log.warning("%s is not a private folder of this user's: checkpoints go elsewhere", folder)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_FOLDER}-"))


def live_checkpoints(
    spec: SearchSpec, store: Store, search_id: str, rows: Iterable[TrialRecord]
) -> set[str]:
    """The checkpoint files a resumed search still needs (the sweep keeps them): those of
    candidates whose latest training run is re-queued, or ended ``ok`` below the top rung."""
    if store.artifacts is None:
        return set()
    latest: dict[int, TrialRecord] = {}
    for row in rows:
        later = row.number not in latest or row.rung >= latest[row.number].rung
        if row.stage == "train" and not row.reused and later:
            latest[row.number] = row
    top = len(spec.strategy.rungs) - 1
    running = (Status.QUEUED, Status.RUNNING)
    live = [
        n
        for n, row in latest.items()
        if row.status in running or (row.status == Status.OK and row.rung < top)
    ]
    return {str(store.artifacts.checkpoint(search_id, n)) for n in live}
