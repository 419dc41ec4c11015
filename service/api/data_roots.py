"""Which datasets a server may read: a dataset read from a file must lie under one of its
``--data-root`` folders. Checked when a search is submitted (``SearchServicer``, answering
INVALID_ARGUMENT) and again when one starts or resumes (``SearchManager``, ending it FAILED):
a search accepted by a server with other roots must not read outside this one's."""

from __future__ import annotations

from pathlib import Path

# datasets whose argument is a file or folder to read (hf: refuses local paths itself)
PATH_DATASETS = ("npz", "cifar10", "imagefolder")


class DataRootError(ValueError):
    """A dataset this server must not read."""


def resolved(roots: tuple[Path, ...] | list[Path]) -> tuple[Path, ...]:
    return tuple(Path(root).resolve() for root in roots)


def check_dataset(dataset: str, roots: tuple[Path, ...]) -> None:
    """``roots`` resolved (``resolved``). A bare ``cifar10`` (which the local CLI downloads
    into a cache) would fetch from the internet into a folder outside them, so it is refused;
    a path is resolved (symlinks, ``..``) before it is compared."""
    name, _, arg = dataset.partition(":")
    if name == "cifar10" and not arg:
        raise DataRootError(
            "a bare 'cifar10' would download CIFAR-10 on the server; give cifar10:DIR, a local "
            "copy of the python-version batches under the server's data roots"
        )
    if name not in PATH_DATASETS or not arg:
        return
    path = Path(arg).expanduser().resolve()
    if not any(path.is_relative_to(root) for root in roots):
        allowed = (
            f"data roots: {', '.join(str(r) for r in roots)}"
            if roots
            else "no data roots; start the server with --data-root"
        )
        raise DataRootError(f"dataset {dataset} is outside this server's --data-root ({allowed})")
