"""``imagefolder:DIR``: image files in torchvision's ``ImageFolder`` layout, read into arrays.

Two layouts, looked for in this order:

- ``DIR/train/<class>/<image>`` and ``DIR/test/<class>/<image>`` (``DIR/val`` when there is no
  ``test``): the splits as the folders give them.
- ``DIR/<class>/<image>``: one folder, split here: a seeded quarter of each class's images
  (``TEST_FRACTION``, at least one of a class of two or more) is the test split, the same
  images on every machine and run.

Classes are the sorted names of the training split's folders, labelled 0..n-1 (torchvision's
``find_classes``); a test folder's class must be one of them. Files are images by
torchvision's extensions (``IMAGE_EXTENSIONS``), decoded by Pillow, given the first training
image's channels (one if it has a single band, else RGB: alpha is dropped) and resized
(bilinear) to its size, so every image becomes the same ``C x H x W`` uint8 array. Every image
is held in memory: this is for folders of thousands of small images, not ImageNet.

Every class folder and image must resolve (symlinks, ``..``) inside ``DIR`` itself: a server
checks that ``DIR`` lies under its ``--data-root`` folders, and a link inside it to a file
elsewhere would read past that check, so one is refused (``DatasetError``) wherever the folder
is read. Links within ``DIR`` are followed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from winnow.search_space.dataset_errors import DatasetError, DatasetSpecError

# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FRACTION, SPLIT_SEED = 0.25, 0
# The largest image kept as it is: ImageNet's usual 224 x 224 RGB. A folder of photographs
# several megapixels each would fill a worker's memory; they are resized first.
MAX_IMAGE_VALUES = 3 * 224 * 224

Labelled = list[tuple[Path, int]]


def folder_argument(directory: str | None) -> str:
    if not directory:
        raise DatasetSpecError("imagefolder needs a folder: imagefolder:DIR")
    return directory


def image_to_array(image, channels: int, size: tuple[int, int]) -> np.ndarray:
    """A Pillow image as a ``channels x H x W`` uint8 array (1 or 3 channels), resized
    (bilinear) to ``size`` (width, height) when it differs."""
    from PIL import Image

    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def image_format(image) -> tuple[int, tuple[int, int]]:
    """``(channels, (width, height))`` that a set of images starting with ``image`` takes."""
    return (1 if len(image.getbands()) == 1 else 3), image.size


def class_images(folder: Path, root: Path | None = None) -> dict[str, list[Path]]:
    """``{class: sorted image files}`` of ``folder``'s class folders, sorted by name; every
    one inside ``root`` (resolved; default ``folder``) once links are followed."""
    root = (root or folder).resolve()
    classes = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.name)
    if not classes:
        raise DatasetError(
            f"{folder} has no class folders (imagefolder:DIR reads DIR/train/<class>/<image> "
            "and DIR/test/<class>/<image>, or DIR/<class>/<image>)"
        )
    images = {c.name: sorted(f for f in c.iterdir() if _is_image(f)) for c in classes}
    for file in (f for files in images.values() for f in files):
        _check_inside(file, root)
    empty = [name for name, files in images.items() if not files]
    if empty:
        raise DatasetError(
            f"{folder}: no images in class folders {empty} (image files end in "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    return images


def _check_inside(file: Path, root: Path) -> None:
    if not file.resolve().is_relative_to(root):
        raise DatasetError(
            f"{file} leads outside {root} (a link to {file.resolve()}): imagefolder reads only "
            "the files under its folder"
        )


def _is_image(file: Path) -> bool:
    return file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    test = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    return (root / "train", test) if (root / "train").is_dir() and test is not None else None


def _seeded_split(images: dict[str, list[Path]]) -> tuple[Labelled, Labelled]:
    rng = np.random.default_rng(SPLIT_SEED)
    train: Labelled = []
    test: Labelled = []
    for label, files in enumerate(images.values()):
        order = rng.permutation(len(files))
        n_test = max(1, round(TEST_FRACTION * len(files))) if len(files) > 1 else 0
        test += [(files[i], label) for i in order[:n_test]]
        train += [(files[i], label) for i in order[n_test:]]
    return train, test


def labelled_files(directory: str) -> tuple[Labelled, Labelled, list[str]]:
    """The training and test images of ``imagefolder:DIR`` with their labels, and the class
    names (label i is ``classes[i]``); nothing is decoded."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DatasetError(f"no such folder {root} (imagefolder:DIR reads image class folders)")
    splits = _split_folders(root)
    if splits is None:
        images = class_images(root)
        train, test = _seeded_split(images)
        classes = list(images)
    else:
        train_images, test_images = (class_images(split, root) for split in splits)
        unknown = sorted(set(test_images) - set(train_images))
        if unknown:
            raise DatasetError(f"{splits[1]}: classes {unknown} have no folder in {splits[0]}")
        classes = list(train_images)
        index = {name: i for i, name in enumerate(classes)}
        train, test = (
            [(f, index[name]) for name, files in split.items() for f in files]
            for split in (train_images, test_images)
        )
    if not test:
        raise DatasetError(f"{root}: no test images (a class of one image stays in training)")
    return train, test, classes


def _open(file: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(file)
    except (OSError, UnidentifiedImageError) as error:
        raise DatasetError(f"cannot read image {file}: {error}") from None


def _first_format(train: Labelled) -> tuple[int, tuple[int, int]]:
    with _open(train[0][0]) as first:
        channels, size = image_format(first)
    if channels * size[0] * size[1] > MAX_IMAGE_VALUES:
        raise DatasetError(
            f"{train[0][0]} is {size[0]}x{size[1]}: images of imagefolder are kept at the first "
            "one's size, at most 224x224 RGB; resize the images first"
        )
    return channels, size


def _read(files: Labelled, channels: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for file, _ in files:
        with _open(file) as image:
            arrays.append(image_to_array(image, channels, size))
    return np.stack(arrays), np.array([label for _, label in files], dtype=np.int64)


def imagefolder_arrays(directory: str | None) -> list[np.ndarray]:
    """``[train_x, train_y, test_x, test_y]`` of ``imagefolder:DIR`` (images N x C x H x W
    uint8)."""
    train, test, _ = labelled_files(folder_argument(directory))
    channels, size = _first_format(train)
    return [*_read(train, channels, size), *_read(test, channels, size)]


def imagefolder_shape(directory: str | None) -> tuple[tuple[int, ...], int]:
    """``((C, H, W), classes)`` from the folder names and the first image's header, without
    decoding the images."""
    train, _, classes = labelled_files(folder_argument(directory))
    channels, (width, height) = _first_format(train)
    return (channels, height, width), len(classes)
