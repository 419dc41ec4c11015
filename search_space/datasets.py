"""Datasets by name: ``digits``, ``npz:PATH``, ``cifar10`` / ``cifar10:DIR``, ``synthetic``.

A dataset is held in memory as tensors (raw values, e.g. uint8 pixels) with the per-channel
normalisation to apply per batch. Images of 32x32 or larger get the standard CIFAR training
augmentation (4-pixel padded random crop and horizontal flip).

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (real data, no download), 1x8x8.
- ``npz:PATH``: arrays ``train_x``, ``train_y``, ``test_x``, ``test_y`` (e.g. the CIFAR-10
  subset in ``../shared/data/cifar10_subset.npz``), images as N x C x H x W or flat N x D.
- ``cifar10:DIR``: the "CIFAR-10 python version" batches in DIR. ``cifar10`` alone uses
  ``$WINNOW_DATA_DIR/cifar10`` (default ``~/.cache/winnow/datasets/cifar10``) and downloads the
  archive there if it is missing, failing with a clear message when offline (the local CLI
  only: the server refuses a bare ``cifar10``). Batches are read by an unpickler that admits
  numpy arrays and nothing else.
- ``synthetic`` or ``synthetic:CxHxW``: learnable random images (class prototypes plus noise),
  for tests and smoke runs; positive sizes, at most ``MAX_SYNTHETIC_VALUES`` values.
- ``python:MODULE:FUNCTION``: what the user's function returns, the arrays of an npz file or a
  pair of torch datasets (``user_data``; a server imports only modules it allows).
- ``imagefolder:DIR``: image files in torchvision's ImageFolder layout (``image_folder``).
- ``hf:NAME[:CONFIG]``: a Hugging Face Hub dataset from the local cache, offline, when the
  optional ``datasets`` package is installed (``hf_data``).

The loaders of user data return the four arrays; ``from_parts`` makes them a ``Dataset`` as
for an npz file (uint8 inputs are pixels, divided by 255).

``check_dataset_spec`` refuses an unknown name or an argument a loader would refuse without
loading anything; spec checks call it. ``dataset_shape`` answers a dataset's example shape and
class count, from its arguments where they say it (``synthetic``), else by loading it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from winnow.search_space.accelerate import to_device
from winnow.search_space.dataset_errors import DatasetError, DatasetSpecError
from winnow.search_space.hf_data import hf_argument, hf_arrays
from winnow.search_space.image_folder import folder_argument, imagefolder_arrays, imagefolder_shape
from winnow.search_space.registry import Registry
from winnow.search_space.user_data import python_argument, python_arrays

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_SHAPE, CIFAR10_CLASSES = (3, 32, 32), 10
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    scale: float  # raw values are divided by this before normalisation
    mean: torch.Tensor  # per channel (or per feature), after scaling
    std: torch.Tensor
    augment: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (raw.dim() - 2)
        x = raw.float() / self.scale
        return (x - self.mean.to(x.device).view(shape)) / self.std.to(x.device).view(shape)

    def batches(
        self,
        split: str,
        batch_size: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised batches; with a generator the order is shuffled and, for training,
        augmented. The last, smaller batch is kept."""
        x_all, y_all = (
            (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)
        )
        n = len(y_all)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = self.normalize(to_device(x_all[idx], device))
            if split == "train" and generator is not None and self.augment:
                x = crop_flip(x, generator)
            yield x, to_device(y_all[idx], device)


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR augmentation on a batch: zero-pad (the mean colour, after normalisation), random
    crop back to size, random horizontal flip. Written on whole batches because torchvision
    cannot be installed beside the torch build this project uses."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def class_count(train_y, test_y) -> int:
    """Classes are labelled 0..n-1: n is one more than the largest label of either split."""
    return int(max(train_y.max(), test_y.max())) + 1


def from_arrays(name: str, train_x, train_y, test_x, test_y, scale: float) -> Dataset:
    """Build a Dataset, computing normalisation statistics on the training split only."""
    train_x, test_x = torch.as_tensor(train_x), torch.as_tensor(test_x)
    train_y = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    test_y = torch.as_tensor(np.asarray(test_y), dtype=torch.long)
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise DatasetError(f"{name}: inputs and labels differ in length")
    dims = [0] + list(range(2, train_x.dim()))
    scaled = train_x.float() / scale
    mean, std = scaled.mean(dims), scaled.std(dims).clamp_min(1e-6)
    is_large_image = train_x.dim() == 4 and min(train_x.shape[2:]) >= 32
    num_classes = class_count(train_y, test_y)
    return Dataset(
        name,
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes,
        scale,
        mean,
        std,
        augment=is_large_image,
    )


# --- loaders ---------------------------------------------------------------------------------

DATASETS: Registry[Callable[[str | None], Dataset]] = Registry("dataset")


def import_loaders() -> None:
    """Import what the loaders import on first use (scikit-learn, and SciPy with it: seconds),
    so that a worker process can do it before its first trial's timeout starts."""
    import sklearn.datasets  # noqa: F401
    import sklearn.model_selection  # noqa: F401


def load_digits_dataset(arg: str | None = None) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None]  # N x 1 x 8 x 8, values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    return from_arrays("digits", x_tr, y_tr, x_te, y_te, scale=16.0)


def _npz_path(path: str | None) -> str:
    if not path:
        raise DatasetSpecError("npz needs a path: npz:PATH")
    return path


def load_npz_dataset(path: str | None) -> Dataset:
    _npz_path(path)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(
            f"no such file {file} (npz:PATH reads arrays train_x, train_y, test_x, test_y)"
        )
    with np.load(file) as arrays:
        missing = {"train_x", "train_y", "test_x", "test_y"} - set(arrays.files)
        if missing:
            raise DatasetError(f"{file} lacks arrays {sorted(missing)}")
        parts = [arrays[k] for k in ("train_x", "train_y", "test_x", "test_y")]
    return from_parts(f"npz:{file}", parts)


def from_parts(name: str, parts: list) -> Dataset:
    """A Dataset of ``[train_x, train_y, test_x, test_y]`` as an npz file holds them: uint8
    inputs are pixels (scaled by 1/255), any other inputs are taken as they are."""
    scale = 255.0 if np.asarray(parts[0]).dtype == np.uint8 else 1.0
    return from_arrays(name, *parts, scale=scale)


def load_python_dataset(path: str | None) -> Dataset:
    return from_parts(f"python:{path}", python_arrays(path))


def load_imagefolder_dataset(directory: str | None) -> Dataset:
    return from_parts(f"imagefolder:{directory}", imagefolder_arrays(directory))


def load_hf_dataset(arg: str | None) -> Dataset:
    return from_parts(f"hf:{arg}", hf_arrays(arg))


# The globals a CIFAR-10 python batch may name: numpy's array reconstruction (under the module
# paths of numpy 1 and of numpy 2) and the codec call that protocol 2 writes bytes with.
# Anything else, e.g. ``os.system`` behind a ``__reduce__``, is refused before it is looked
# up: a plain ``pickle.load`` would run whatever a file under a data root names.
_CIFAR_GLOBALS = frozenset(
    [(module, name) for module in _NUMPY_MULTIARRAY for name in ("_reconstruct", "scalar")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")]
)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch: dicts, lists, numbers, bytes and numpy arrays, no code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a CIFAR-10 batch holds only numpy arrays "
                "and lists"
            )
        return super().find_class(module, name)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images (N x 3 x 32 x 32) and labels. The real files were written by Python 2,
    so their keys come back as str under ``encoding="latin1"``; a batch written by Python 3 may
    have bytes keys, so both are accepted."""
    try:
        with open(file, "rb") as f:
            batch = _CifarUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise DatasetError(f"{file} is not a CIFAR-10 python batch: {error}") from error
    if not isinstance(batch, dict):
        raise DatasetError(f"{file} is not a CIFAR-10 python batch (not a dict)")
    data, labels = (batch.get(key, batch.get(key.encode())) for key in ("data", "labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise DatasetError(f"{file} is not a CIFAR-10 python batch (needs data and labels)")
    return data.reshape(-1, *CIFAR10_SHAPE), np.asarray(labels)


def _read_cifar_batches(folder: Path) -> Dataset:
    train = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return from_arrays(f"cifar10:{folder}", train_x, train_y, test_x, test_y, scale=255.0)


def _cifar_folder(root: Path) -> Path | None:
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return folder
    return None


def _download_cifar10(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz"
    print(f"winnow: downloading CIFAR-10 (163 MB) to {root}", flush=True)
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=30) as response, open(archive, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
    except (urllib.error.URLError, OSError) as error:
        archive.unlink(missing_ok=True)
        raise DatasetError(
            f"cannot download CIFAR-10 from {CIFAR10_URL} ({error}); this machine may be "
            "offline. Put the python-version batches in a folder and use cifar10:DIR"
        ) from None
    if hashlib.md5(archive.read_bytes()).hexdigest() != CIFAR10_MD5:
        archive.unlink()
        raise DatasetError("the downloaded CIFAR-10 archive is corrupt (MD5 mismatch); try again")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")


def load_cifar10_dataset(directory: str | None) -> Dataset:
    if directory:
        folder = _cifar_folder(Path(directory).expanduser())
        if folder is None:
            raise DatasetError(
                f"{directory} holds no CIFAR-10 python batches (data_batch_1..5, test_batch)"
            )
        return _read_cifar_batches(folder)
    default = Path(os.environ.get("WINNOW_DATA_DIR", "~/.cache/winnow/datasets")).expanduser()
    root = default / "cifar10"
    if _cifar_folder(root) is None:
        _download_cifar10(root)
    return _read_cifar_batches(_cifar_folder(root))


# A synthetic example holds at most an ImageNet-sized image: its 768 examples then take
# ~460 MB as float32; a larger shape is a typo, and would exhaust a worker's memory.
MAX_SYNTHETIC_VALUES = 3 * 224 * 224
SYNTHETIC_CLASSES = 10


def synthetic_shape(shape: str | None) -> tuple[int, ...]:
    """The example shape of ``synthetic:SHAPE`` (default 3x32x32): positive sizes, at most
    ``MAX_SYNTHETIC_VALUES`` values in all."""
    usage = f"synthetic:SHAPE takes e.g. 3x32x32 or 20, not {shape!r}"
    try:
        dims = tuple(int(d) for d in (shape or "3x32x32").split("x"))
    except ValueError:
        raise DatasetSpecError(usage) from None
    if min(dims) < 1:
        raise DatasetSpecError(f"{usage}: sizes must be positive")
    if math.prod(dims) > MAX_SYNTHETIC_VALUES:
        raise DatasetSpecError(
            f"{usage}: at most {MAX_SYNTHETIC_VALUES} values (3x224x224) per example"
        )
    return dims


def load_synthetic_dataset(shape: str | None) -> Dataset:
    """Class prototypes plus Gaussian noise: learnable, deterministic, no files."""
    dims = synthetic_shape(shape)
    rng = np.random.default_rng(0)
    num_classes, n_train, n_test = SYNTHETIC_CLASSES, 512, 256
    prototypes = rng.normal(size=(num_classes, *dims)).astype(np.float32)
    labels = rng.integers(0, num_classes, n_train + n_test)
    x = prototypes[labels] + 1.5 * rng.normal(size=(n_train + n_test, *dims)).astype(np.float32)
    return from_arrays(
        f"synthetic:{'x'.join(map(str, dims))}",
        x[:n_train],
        labels[:n_train],
        x[n_train:],
        labels[n_train:],
        scale=1.0,
    )


DATASETS.register("digits", load_digits_dataset)
DATASETS.register("npz", load_npz_dataset)
DATASETS.register("cifar10", load_cifar10_dataset)
DATASETS.register("synthetic", load_synthetic_dataset)
DATASETS.register("python", load_python_dataset)
DATASETS.register("imagefolder", load_imagefolder_dataset)
DATASETS.register("hf", load_hf_dataset)


# Datasets handed to this process ready-made (a Ray worker gets them from the object store,
# so that a cluster node needs no copy of the file the spec names).
_PROVIDED: dict[str, Dataset] = {}


def provide_dataset(spec: str, dataset: Dataset) -> None:
    """Make ``load_dataset(spec)`` answer ``dataset`` in this process."""
    _PROVIDED[spec] = dataset


def is_provided(spec: str) -> bool:
    return spec in _PROVIDED


# What each loader's argument must be, checked without loading (a file's existence is not:
# the spec may be checked where the file is not, e.g. on the client of a server).
_ARGUMENT_CHECKS: dict[str, Callable[[str | None], object]] = {
    "npz": _npz_path,
    "synthetic": synthetic_shape,
    "python": python_argument,
    "imagefolder": folder_argument,
    "hf": hf_argument,
}


def check_dataset_spec(spec: str) -> None:
    """Raise ``UnknownNameError`` for an unknown name and ``DatasetSpecError`` for an argument
    its loader would refuse (both ValueErrors), without loading anything."""
    name, _, arg = spec.partition(":")
    DATASETS.get(name)
    check = _ARGUMENT_CHECKS.get(name)
    if check is not None:
        check(arg or None)


# What a loader's argument says of its examples and classes without reading anything.
_KNOWN_SHAPES: dict[str, Callable[[str | None], tuple[tuple[int, ...], int]]] = {
    "synthetic": lambda arg: (synthetic_shape(arg), SYNTHETIC_CLASSES),
    "cifar10": lambda arg: (CIFAR10_SHAPE, CIFAR10_CLASSES),  # the format's, whatever the folder
}


def _npz_shape(path: str | None) -> tuple[tuple[int, ...], int]:
    """An npz dataset's example shape from its ``train_x`` header and its classes from the
    labels, without reading the images."""
    file = Path(_npz_path(path)).expanduser()
    try:
        with zipfile.ZipFile(file) as archive, archive.open("train_x.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, _, _ = read_header(member)
        with np.load(file) as arrays:
            labels = arrays["train_y"], arrays["test_y"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DatasetError(f"cannot read the shape of {file}: {error}") from error
    return tuple(shape[1:]), class_count(*labels)


# How the loaders that read files answer the shape for less than a load.
_READ_SHAPES: dict[str, Callable[[str | None], tuple[tuple[int, ...], int]]] = {
    "npz": _npz_shape,
    "imagefolder": imagefolder_shape,  # folder names and the first image's header
}


def dataset_shape(spec: str, load: bool = True) -> tuple[tuple[int, ...], int] | None:
    """``(input shape, classes)`` of dataset ``spec``: from its argument where that says it
    (``synthetic``, ``cifar10``), from a dataset handed to this process, else (``load``) from
    what the loader reads for it (an npz file's header and labels) or by loading it; None
    when ``load`` is false and it needs reading (a request handler reads no dataset)."""
    name, _, arg = spec.partition(":")
    if name in _KNOWN_SHAPES:
        return _KNOWN_SHAPES[name](arg or None)
    if spec in _PROVIDED:
        dataset = _PROVIDED[spec]
    elif not load:
        return None
    elif name in _READ_SHAPES:
        return _READ_SHAPES[name](arg or None)
    else:
        dataset = load_dataset(spec)
    return dataset.input_shape, dataset.num_classes


def load_dataset(spec: str) -> Dataset:
    """Load ``NAME`` or ``NAME:ARG`` (cached: datasets are read-only once loaded)."""
    return _PROVIDED.get(spec) or _load_cached(spec)


@functools.lru_cache(maxsize=4)
def _load_cached(spec: str) -> Dataset:
    name, _, arg = spec.partition(":")
    return DATASETS.get(name)(arg or None)
