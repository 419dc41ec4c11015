"""Datasets: the bundled digits, npz files (the real CIFAR-10 subset), CIFAR-10 folders and
an offline download, synthetic data, batching and augmentation."""

from __future__ import annotations

import pickle
import urllib.error

import numpy as np
import pytest
import torch

from winnow.search_space import datasets
from winnow.search_space.datasets import DatasetError, crop_flip, load_dataset
from winnow.search_space.registry import UnknownNameError


def test_digits_is_the_real_bundled_data():
    data = load_dataset("digits")
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.train_y) + len(data.test_y) == 1797
    assert not data.augment
    x, _ = next(data.batches("train", 10_000))
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_npz_reads_the_real_cifar10_subset(shared_data):
    data = load_dataset(f"npz:{shared_data / 'cifar10_subset.npz'}")
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train_y), len(data.test_y)) == (4660, 846)
    assert data.train_x.dtype == torch.uint8 and data.augment
    # Statistics come from the training split and match CIFAR-10's published ones closely.
    torch.testing.assert_close(data.mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.02, rtol=0)
    torch.testing.assert_close(data.std, torch.tensor([0.2470, 0.2435, 0.2616]), atol=0.02, rtol=0)


def test_npz_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_x=np.zeros((2, 3)), train_y=np.zeros(2))
    with pytest.raises(DatasetError, match="test_x"):
        load_dataset(f"npz:{partial}")


def write_cifar_folder(folder, per_batch=4):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, per_batch)),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_folder(tmp_path):
    write_cifar_folder(tmp_path)
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.input_shape == (3, 32, 32)
    assert (len(data.train_y), len(data.test_y)) == (20, 4)
    with pytest.raises(DatasetError, match="no CIFAR-10"):
        load_dataset(f"cifar10:{tmp_path / 'empty'}")


def test_cifar10_download_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WINNOW_DATA_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(datasets.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match="offline"):
        datasets.load_cifar10_dataset(None)
    assert not (tmp_path / "cifar10" / "cifar-10-python.tar.gz").exists()


def test_synthetic_is_learnable_and_deterministic():
    a, b = load_dataset("synthetic:3x8x8"), datasets.load_synthetic_dataset("3x8x8")
    assert torch.equal(a.train_x, b.train_x)
    # Nearest class mean on raw inputs separates the classes well above chance.
    means = torch.stack([a.train_x[a.train_y == k].mean(0) for k in range(10)])
    dist = ((a.test_x[:, None] - means[None]) ** 2).flatten(2).sum(-1)
    assert (dist.argmin(1) == a.test_y).float().mean() > 0.5
    with pytest.raises(DatasetError):
        load_dataset("synthetic:3xbig")


def test_unknown_dataset_lists_the_names():
    with pytest.raises(UnknownNameError, match="digits, npz, cifar10, synthetic"):
        load_dataset("imagenet")


def test_batches_cover_the_split_and_shuffle_with_a_generator():
    data = load_dataset("digits")
    ordered = torch.cat([y for _, y in data.batches("test", 100)])
    assert torch.equal(ordered, data.test_y)
    shuffled = torch.cat([y for _, y in data.batches("test", 100, generator=torch.Generator())])
    assert not torch.equal(shuffled, ordered)
    assert torch.equal(shuffled.sort().values, ordered.sort().values)


def test_crop_flip_keeps_shape_and_only_moves_pixels():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    out = crop_flip(x, generator, pad=0)  # no padding: every sample is itself or its mirror
    for original, augmented in zip(x, out, strict=True):
        assert torch.equal(augmented, original) or torch.equal(augmented, original.flip(2))
    padded = crop_flip(x, generator)
    assert padded.shape == x.shape
    # A crop shifts the image: each augmented row holds pixels of the original (or zeros).
    assert not torch.equal(padded, x)


class _WritesAMarker:
    """What an attacker would put in a batch file: unpickling it runs ``os.system``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class _ExecsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_WritesAMarker, _ExecsCode])
def test_a_cifar10_batch_that_would_run_code_is_refused(tmp_path, payload):
    write_cifar_folder(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({"data": payload(marker), "labels": [0]}, f, protocol=2)
    refused = r"data_batch_3.*refused global (posix|os|builtins|__builtin__)\."
    with pytest.raises(DatasetError, match=refused):
        load_dataset(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_a_cifar10_batch_as_the_real_files_are_written_loads(tmp_path):
    # Protocol 2 like the real (Python 2) files; bytes keys as Python 3 writes them, uint8
    # pixels and a list of plain ints.
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": b"training batch",
            b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
            b"labels": [int(k) for k in rng.integers(0, 10, 3)],
            b"filenames": [b"a.png", b"b.png", b"c.png"],
        }
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.train_x.dtype == torch.uint8 and data.input_shape == (3, 32, 32)
    assert (len(data.train_y), len(data.test_y)) == (15, 3)


def test_a_synthetic_datasets_shape_is_known_without_building_it(monkeypatch):
    built = load_dataset("synthetic:2x5x5")
    monkeypatch.setattr(datasets, "load_dataset", lambda spec: pytest.fail("built " + spec))
    assert datasets.dataset_shape("synthetic:2x5x5", load=False) == (
        built.input_shape,
        built.num_classes,
    )
    assert datasets.dataset_shape("digits", load=False) is None  # digits needs loading


def test_an_npz_datasets_shape_is_read_from_its_header_and_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.random((6, 2, 3, 3)), "train_y": np.array([0, 1, 2, 0, 1, 4])}
    arrays |= {"test_x": rng.random((2, 2, 3, 3)), "test_y": np.array([5, 0])}
    np.savez(tmp_path / "d.npz", **arrays)
    spec = f"npz:{tmp_path / 'd.npz'}"
    built = load_dataset(spec)
    monkeypatch.setattr(datasets, "load_dataset", lambda spec: pytest.fail("loaded " + spec))
    assert datasets.dataset_shape(spec) == (built.input_shape, built.num_classes) == ((2, 3, 3), 6)
    assert datasets.dataset_shape(spec, load=False) is None
