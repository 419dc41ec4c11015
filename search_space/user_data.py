"""``python:MODULE:FUNCTION``: a dataset the user's own function returns.

The function is called with no arguments, once per process (``load_dataset`` caches the
result), and returns either

- a mapping with the arrays an ``npz:`` file holds: ``train_x``, ``train_y``, ``test_x``,
  ``test_y`` (numpy arrays, torch tensors or nested lists; inputs N x C x H x W or N x D), or
- a pair ``(train, test)`` of ``torch.utils.data.Dataset``: map-style datasets whose item ``i``
  is ``(input, label)``, the input a tensor, an array or a Pillow image (as torchvision's
  datasets give them without a transform), the label an int or a 0-d tensor. Every item is
  read once and stacked: the input shape is the first item's, and every item must have it.

As for ``npz:``, uint8 inputs are pixels (divided by 255), anything else is used as it is, and
the classes are the largest label plus one. The module is imported where the dataset is
loaded: in each worker process (a local pool's workers are spawned with the server's
``sys.path``) and, for the input shape and for Ray (which puts the dataset in its object
store), in the server; a server imports only modules its operator allows
(``user_code.check_import_allowed``, checked when a search is submitted and when it starts).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from winnow.search_space.dataset_errors import DatasetError, DatasetSpecError
from winnow.search_space.image_folder import image_format, image_to_array
from winnow.search_space.user_code import (
    ImportPathError,
    UserCodeError,
    import_object,
    parse_import_path,
)

SPLITS = ("train_x", "train_y", "test_x", "test_y")


def python_argument(path: str | None) -> str:
    """The import path of ``python:PATH``, checked as text (nothing is imported)."""
    if not path:
        raise DatasetSpecError("python needs an import path: python:MODULE:FUNCTION")
    try:
        parse_import_path(path)
    except ImportPathError as error:
        raise DatasetSpecError(f"python:MODULE:FUNCTION: {error}") from None
    return path


def python_arrays(path: str | None) -> list[np.ndarray]:
    """``[train_x, train_y, test_x, test_y]`` of what the function at ``path`` returns."""
    name = f"python:{python_argument(path)}"
    try:
        loader = import_object(path)
    except UserCodeError as error:  # its message starts with the path
        raise DatasetError(f"python:{error}") from None
    try:
        data = loader()
    except Exception as error:  # the user's code: any failure is this dataset's
        message = f"{name}: the function raised {type(error).__name__}: {error}"
        raise DatasetError(message) from error
    return user_arrays(name, data)


def user_arrays(name: str, data: object) -> list[np.ndarray]:
    """The four arrays of a mapping or of a ``(train, test)`` pair of torch datasets."""
    if isinstance(data, Mapping):
        missing = [key for key in SPLITS if key not in data]
        if missing:
            raise DatasetError(f"{name} returned a mapping without {missing}")
        arrays = [_array(name, key, data[key]) for key in SPLITS]
    elif isinstance(data, tuple | list) and len(data) == 2 and all(_map_style(d) for d in data):
        arrays = [*_items_arrays(name, "train", data[0]), *_items_arrays(name, "test", data[1])]
    else:
        raise DatasetError(
            f"{name} returned {type(data).__name__}; a dataset function returns a mapping of "
            f"arrays {', '.join(SPLITS)} or a pair (train, test) of torch.utils.data.Dataset"
        )
    for key, array in zip(SPLITS, arrays, strict=True):
        if array.ndim == 0 or len(array) == 0:
            raise DatasetError(f"{name}: {key} is empty")
    return arrays


def _map_style(dataset: object) -> bool:
    return hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def _array(name: str, what: str, value: object) -> np.ndarray:
    """``value`` as a numpy array: a tensor detached and moved to the CPU first (one on a GPU,
    or needing grad, cannot be converted as it is); anything numpy cannot make one array of
    (ragged lists, objects) is this dataset's ``DatasetError``."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    try:
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as error:
        message = f"{name}: {what} is not an array ({type(error).__name__}: {error})"
        raise DatasetError(message) from None


def _input_array(
    name: str, what: str, value: object, image_form: tuple[int, tuple[int, int]] | None
) -> np.ndarray:
    if hasattr(value, "getbands") and image_form is not None:  # a Pillow image: C x H x W
        return image_to_array(value, *image_form)
    return _array(name, what, value)


def _items_arrays(name: str, split: str, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels of every item of a map-style dataset, stacked."""
    if len(dataset) == 0:
        raise DatasetError(f"{name}: the {split} dataset is empty")
    image_form = None  # a first image's channels and size, which later images are given
    inputs, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DatasetError(f"{name}: {split} item {i} is not a pair (input, label)")
        if i == 0 and hasattr(item[0], "getbands"):
            image_form = image_format(item[0])
        x = _input_array(name, f"{split} item {i}'s input", item[0], image_form)
        if inputs and x.shape != inputs[0].shape:
            raise DatasetError(
                f"{name}: {split} item {i} has shape {list(x.shape)}, the first item "
                f"{list(inputs[0].shape)}; every input must have one shape"
            )
        inputs.append(x)
        labels.append(_label(name, f"{split} item {i}", item[1]))
    return np.stack(inputs), np.array(labels, dtype=np.int64)


def _label(name: str, what: str, value: object) -> int:
    try:
        return int(value.detach().cpu() if hasattr(value, "detach") else value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise DatasetError(f"{name}: {what}'s label is not an integer ({error})") from None
