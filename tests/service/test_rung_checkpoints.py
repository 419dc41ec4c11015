"""Which continued-rung checkpoints a search deletes, and which its start-up sweep keeps."""

from __future__ import annotations

from types import SimpleNamespace

from winnow.records import Status, TrialRecord
from winnow.service.engine.rung_checkpoints import RungCheckpoints, live_checkpoints
from winnow.service.engine.rungs import SuccessiveHalving
from winnow.service.search_spec import parse_search_spec
from winnow.service.store.artifacts import Artifacts

SPEC = parse_search_spec(
    {
        "space": "digits-joint",
        "task": {"dataset": "digits"},
        "strategy": {"name": "random", "rungs": [1, 3, 9], "reduction_factor": 3},
    }
)


def checkpoints(tmp_path, numbers):
    store = SimpleNamespace(artifacts=Artifacts(tmp_path))  # all RungCheckpoints asks of it
    files = RungCheckpoints(SPEC, store, "s")
    for n in numbers:
        files.folder.checkpoint("s", n).parent.mkdir(parents=True, exist_ok=True)
        files.folder.checkpoint("s", n).write_bytes(b"state")
    return files


def left(tmp_path) -> set[int]:
    return {int(p.stem) for p in (tmp_path / "s").glob("*.ckpt")}


def test_a_settled_rung_releases_those_neither_promoted_nor_promotable(tmp_path):
    files = checkpoints(tmp_path, range(6))
    ladder = SuccessiveHalving([1, 3, 9], 3, ["maximize"])
    for n in range(6):
        ladder.record(0, n, [n / 10])  # 5 and 4 are the best third
    ladder.mark_promoted(0, 5)
    files.release_settled(ladder, busy=[], proposing=True)  # more candidates may come
    assert left(tmp_path) == set(range(6))
    files.release_settled(ladder, busy=[0], proposing=False)  # a first-rung run in flight
    assert left(tmp_path) == set(range(6))
    files.release_settled(ladder, busy=[1], proposing=False)  # settled: 5 went up, 4 will
    assert left(tmp_path) == {4, 5}
    assert files.epochs_to_run(0) == 1 and files.epochs_to_run(2) == 6


def test_release_all_and_a_search_without_continued_rungs(tmp_path):
    files = checkpoints(tmp_path, [0, 1])
    files.release(0)
    files.release(0)  # once only, and a second time is no error
    assert left(tmp_path) == {1}
    files.release_all()
    assert left(tmp_path) == set()
    off = SPEC.model_copy(
        update={"strategy": SPEC.strategy.model_copy(update={"continue_rungs": False})}
    )
    none = RungCheckpoints(off, SimpleNamespace(artifacts=Artifacts(tmp_path)), "s")
    assert none.path(0) is None and none.schedule_epochs() is None
    assert none.epochs_to_run(2) == 9


def row(number: int, rung: int, status: Status, reused: bool = False) -> TrialRecord:
    return TrialRecord(None, "s", number, "train", status, "{}", "key", rung=rung, reused=reused)


def test_the_sweep_keeps_the_checkpoints_of_candidates_still_in_play(tmp_path):
    store = SimpleNamespace(artifacts=Artifacts(tmp_path))
    rows = [
        row(0, 0, Status.OK),  # may still be promoted
        row(1, 0, Status.OK),
        row(1, 1, Status.RUNNING),  # re-queued mid-rung
        row(2, 0, Status.OK),
        row(2, 2, Status.OK),  # completed the top rung
        row(3, 0, Status.FAILED),
        row(4, 2, Status.OK, reused=True),
    ]
    live = live_checkpoints(SPEC, store, "s", rows)
    assert live == {str(Artifacts(tmp_path).checkpoint("s", n)) for n in (0, 1)}


def test_without_an_artifact_folder_checkpoints_go_to_a_private_folder(tmp_path, monkeypatch):
    import os
    import stat

    from winnow.service.engine import rung_checkpoints

    monkeypatch.setattr(rung_checkpoints.tempfile, "tempdir", str(tmp_path))
    files = RungCheckpoints(SPEC, SimpleNamespace(artifacts=None), "s")
    folder = files.folder.root
    assert folder.parent == tmp_path and folder.stat().st_uid == os.getuid()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert files.path(0).startswith(str(folder))
    # a folder others may write (planted before the server started) is not used
    folder.chmod(0o777)
    elsewhere = RungCheckpoints(SPEC, SimpleNamespace(artifacts=None), "s").folder.root
    assert elsewhere != folder and stat.S_IMODE(elsewhere.stat().st_mode) == 0o700
    folder.rmdir()
    (tmp_path / folder.name).symlink_to(elsewhere)  # nor a link, even to a private folder
    assert RungCheckpoints(SPEC, SimpleNamespace(artifacts=None), "s").folder.root != folder


def test_a_released_candidate_trained_again_is_released_again(tmp_path):
    files = checkpoints(tmp_path, [0])
    files.release(0)
    assert files.claim(0) == files.path(0)  # e.g. a resumed search promotes it after all
    files.folder.checkpoint("s", 0).write_bytes(b"state")
    files.release(0)
    assert left(tmp_path) == set()


def test_a_run_without_its_checkpoint_file_counts_its_whole_rung(tmp_path):
    files = checkpoints(tmp_path, [0])
    assert files.epochs_to_run(1, 0) == 3 - 1  # continues from the first rung's end
    assert files.epochs_to_run(1, 1) == 3  # no file: from epoch 0
    assert files.epochs_to_run(0, 1) == 1 and files.epochs_to_run(2) == 9 - 3
    oracle = RungCheckpoints(SPEC, SimpleNamespace(artifacts=Artifacts(tmp_path)), "o")
    assert oracle.epochs_to_run(1, 0) == 3 - 1  # its workers write no files: they continue
