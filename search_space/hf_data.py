"""``hf:NAME[:CONFIG]``: a Hugging Face Hub dataset, read from this machine's cache only.

winnow never downloads one: while it loads (``offline``), the loader sets
``HF_DATASETS_OFFLINE`` and ``HF_HUB_OFFLINE`` (in the environment, before ``datasets`` is
imported, and on its config and ``huggingface_hub``'s constants) and asks
``datasets.load_dataset(NAME, CONFIG, download_mode="reuse_dataset_if_exists",
trust_remote_code=False)`` (the last where the installed ``datasets`` takes it: a cached
dataset's loading script is never run), which then answers from the cache (``HF_HOME``,
``HF_DATASETS_CACHE``). The variables and settings are put back afterwards, so the rest of the
process is as it was; only copies that modules took when ``datasets`` was first imported here
stay offline (winnow's workers are processes of their own; a server process that imports
``datasets`` for itself should import it before winnow loads an ``hf:`` dataset). A
dataset not cached fails naming it and saying how to fetch it; so does a machine without the
``datasets`` package (optional: winnow does not depend on it). ``NAME`` is a Hub id
(``mnist``, ``user/name``); a local folder is refused (``datasets`` would read it from the
server's disk: local files are ``imagefolder:`` or ``npz:``, under ``--data-root``).

Splits: ``train``, and ``test`` (else ``validation``). Columns: the label is the ``ClassLabel``
feature (else a column named ``label`` or ``labels``); the input is the one other column (an
``Image`` feature, decoded and given the first image's channels and size as ``imagefolder``
does, or an array column), or, when there are several, every other column, each a number
(a tabular row: N x D).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from winnow.search_space.dataset_errors import DatasetError, DatasetSpecError
from winnow.search_space.image_folder import image_format, image_to_array

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?\Z")
_CONFIG = re.compile(r"[\w.-]+\Z")
LABEL_NAMES = ("label", "labels")
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def hf_argument(arg: str | None) -> tuple[str, str | None]:
    """``(name, config)`` of ``hf:NAME[:CONFIG]``, checked as text."""
    name, _, config = (arg or "").partition(":")
    if not _HUB_ID.match(name) or ".." in name or (config and not _CONFIG.match(config)):
        raise DatasetSpecError(
            f"hf:NAME[:CONFIG] takes a Hugging Face Hub dataset id, e.g. hf:mnist or "
            f"hf:user/name:config, not hf:{arg or ''}"
        )
    return name, config or None


@contextlib.contextmanager
def offline() -> Iterator[Any]:
    """The ``datasets`` module, set to read nothing but the local cache until the block ends
    (the environment and the settings are then as they were)."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
    try:
        datasets, constants = _import_datasets()
        settings = [
            (datasets.config, "HF_DATASETS_OFFLINE"),
            (datasets.config, "HF_HUB_OFFLINE"),
            (constants, "HF_HUB_OFFLINE"),
        ]
        before = [(owner, name, getattr(owner, name, None)) for owner, name in settings]
        for owner, name in settings:
            setattr(owner, name, True)
        try:
            yield datasets
        finally:
            for owner, name, value in before:
                setattr(owner, name, value)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _import_datasets() -> tuple[Any, Any]:
    try:
        import datasets
        import huggingface_hub.constants
    except ImportError:
        raise DatasetError(
            "hf:NAME datasets need the Hugging Face datasets package, which is not installed "
            "here (pip install datasets)"
        ) from None
    return datasets, huggingface_hub.constants


def _load_cached(datasets, spec: str, name: str, config: str | None):
    options: dict[str, Any] = {"download_mode": "reuse_dataset_if_exists"}
    if "trust_remote_code" in inspect.signature(datasets.load_dataset).parameters:
        options["trust_remote_code"] = False  # a cached loading script is not run
    try:
        return datasets.load_dataset(name, config, **options)
    except Exception as error:  # noqa: BLE001 - datasets raises ConnectionError, FileNotFoundError, ...
        fetch = f"datasets.load_dataset({name!r}{f', {config!r}' if config else ''})"
        raise DatasetError(
            f"{spec} is not in this machine's Hugging Face cache "
            f"({datasets.config.HF_DATASETS_CACHE}); winnow reads it offline: download it once "
            f"with {fetch} where there is a network, "
            f"with the same HF_HOME ({type(error).__name__}: {error})"
        ) from None


def _label_column(spec: str, features) -> str:
    labels = [c for c, f in features.items() if type(f).__name__ == "ClassLabel"]
    labels = labels or [c for c in LABEL_NAMES if c in features]
    if not labels:
        raise DatasetError(
            f"{spec}: no label column (a ClassLabel feature, or one named label) among "
            f"{list(features)}"
        )
    return labels[0]


def _images(column, image_form) -> tuple[np.ndarray, tuple]:
    images = list(column)
    image_form = image_form or image_format(images[0])
    return np.stack([image_to_array(image, *image_form) for image in images]), image_form


def split_arrays(spec: str, split, image_form=None) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Inputs and labels of one split (a ``datasets.Dataset``), and the channels and size its
    images were given (``image_form``: the training split's, for the test split's images)."""
    label = _label_column(spec, split.features)
    inputs = [c for c in split.column_names if c != label]
    columns = split.with_format("numpy")
    y = np.asarray(columns[label], dtype=np.int64)
    if len(inputs) == 1 and type(split.features[inputs[0]]).__name__ == "Image":
        x, image_form = _images(split[inputs[0]], image_form)
        return x, y, image_form
    if len(inputs) == 1:
        return np.asarray(columns[inputs[0]]), y, None
    values = [np.asarray(columns[c]) for c in inputs]
    if any(v.ndim != 1 or not np.issubdtype(v.dtype, np.number) for v in values):
        raise DatasetError(
            f"{spec}: several input columns {inputs} are read as a table's, so each must hold "
            "one number per row"
        )
    return np.stack(values, axis=1).astype(np.float32), y, None


def hf_arrays(arg: str | None) -> list[np.ndarray]:
    """``[train_x, train_y, test_x, test_y]`` of ``hf:NAME[:CONFIG]`` from the local cache."""
    name, config = hf_argument(arg)
    spec = f"hf:{arg}"
    if Path(name).expanduser().exists():
        raise DatasetError(
            f"{spec}: {name} is a local path here; hf: reads Hub datasets from the cache (local "
            "files are imagefolder:DIR or npz:PATH)"
        )
    with offline() as datasets:  # decoding the splits may read the cache too
        splits = _load_cached(datasets, spec, name, config)
        test = next((s for s in ("test", "validation") if s in splits), None)
        if "train" not in splits or test is None:
            raise DatasetError(
                f"{spec} has splits {list(splits)}; winnow needs train and test (or validation)"
            )
        train_x, train_y, image_form = split_arrays(spec, splits["train"])
        test_x, test_y, _ = split_arrays(spec, splits[test], image_form)
    return [train_x, train_y, test_x, test_y]
