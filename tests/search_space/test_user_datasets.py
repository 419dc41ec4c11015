"""Datasets of the user's own: ``python:`` functions (arrays or torch datasets), import paths
and the allow-list, ``imagefolder:`` folders, and ``hf:`` read offline from the local cache."""

from __future__ import annotations

import os
import textwrap
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from winnow.search_space import hf_data, image_folder
from winnow.search_space.datasets import (
    DatasetError,
    DatasetSpecError,
    check_dataset_spec,
    dataset_shape,
    load_dataset,
)
from winnow.search_space.user_code import (
    ImportNotAllowedError,
    ImportPathError,
    UserCodeError,
    check_import_allowed,
    import_object,
)

# The user's module: arrays of digits' size, torch datasets, Pillow images, and mistakes.
USER_MODULE = """
import numpy as np
import torch
from PIL import Image

rng = np.random.default_rng(0)
values = 7  # not callable


def arrays():
    return {
        "train_x": rng.integers(0, 256, (30, 1, 6, 5), dtype=np.uint8),
        "train_y": rng.integers(0, 4, 30),
        "test_x": rng.integers(0, 256, (10, 1, 6, 5), dtype=np.uint8),
        "test_y": np.array([0, 1, 2, 5, 0, 1, 2, 3, 0, 1]),
    }


def tabular():
    x = torch.randn(40, 12)
    return {"train_x": x[:30], "train_y": torch.arange(30) % 3, "test_x": x[30:],
            "test_y": torch.arange(10) % 3}


def tensors():
    train = torch.utils.data.TensorDataset(torch.randn(20, 9), torch.arange(20) % 6)
    test = torch.utils.data.TensorDataset(torch.randn(8, 9), torch.arange(8) % 2)
    return train, test


class Images(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):  # varying sizes: every image takes the first one's
        image = Image.new("RGB", (10 + i, 8), (i * 20, 0, 255 - i * 20))
        return image, torch.tensor(i % 3)


def images():
    return Images(6), Images(3)


def ragged():
    train = [(torch.zeros(3), 0), (torch.zeros(4), 1)]
    return train, train


def missing_test():
    return {"train_x": [[1.0]], "train_y": [0]}


def fails():
    raise RuntimeError("the data server is down")
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """A fresh module (a unique name: loads are cached per process by spec) on sys.path."""
    name = f"winnow_user_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_function_returning_arrays_is_loaded_as_an_npz_file_would_be(user_module):
    data = load_dataset(f"python:{user_module}:arrays")
    assert data.input_shape == (1, 6, 5) and data.train_x.dtype == torch.uint8
    assert data.num_classes == 6  # the largest label (5, in the test split) plus one
    assert data.scale == 255.0 and (len(data.train_y), len(data.test_y)) == (30, 10)
    assert dataset_shape(f"python:{user_module}:arrays") == ((1, 6, 5), 6)
    tabular = load_dataset(f"python:{user_module}:tabular")
    assert tabular.input_shape == (12,) and tabular.num_classes == 3 and tabular.scale == 1.0


def test_a_pair_of_torch_datasets_is_read_item_by_item(user_module):
    data = load_dataset(f"python:{user_module}:tensors")
    assert data.input_shape == (9,) and data.num_classes == 6
    assert data.train_y.tolist() == [i % 6 for i in range(20)]


def test_pillow_images_take_the_first_images_channels_and_size(user_module):
    data = load_dataset(f"python:{user_module}:images")
    assert data.input_shape == (3, 8, 10) and data.train_x.dtype == torch.uint8
    assert data.num_classes == 3 and len(data.test_y) == 3
    # the first image's colour, unchanged: red 0, blue 255
    assert data.train_x[0, 0].max() == 0 and data.train_x[0, 2].min() == 255


def test_tensors_needing_grad_are_detached_and_what_is_no_array_is_a_dataset_error():
    from winnow.search_space.user_data import user_arrays

    x = torch.rand(8, 3, requires_grad=True)  # np.asarray alone raises on it
    y = torch.arange(8) % 2
    arrays = user_arrays("python:m:f", {"train_x": x, "train_y": y, "test_x": x, "test_y": y})
    assert arrays[0].shape == (8, 3) and np.allclose(arrays[0], x.detach().numpy())
    ragged = {"train_x": [[1, 2], [3]], "train_y": [0, 1], "test_x": x, "test_y": y}
    with pytest.raises(DatasetError, match="python:m:f: train_x is not an array"):
        user_arrays("python:m:f", ragged)
    pairs = [(torch.rand(3, requires_grad=True), torch.tensor(i % 2)) for i in range(4)]
    assert user_arrays("python:m:f", (pairs, pairs))[1].tolist() == [0, 1, 0, 1]
    with pytest.raises(DatasetError, match="train item 0's label is not an integer"):
        user_arrays("python:m:f", ([(x[0], "cat")], pairs))


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("nowhere", "has no attribute 'nowhere'"),
        ("values", "int is not callable"),
        ("ragged", "train item 1 has shape [4], the first item [3]"),
        ("missing_test", "without ['test_x', 'test_y']"),
        ("fails", "the function raised RuntimeError: the data server is down"),
    ],
)
def test_a_bad_function_fails_naming_what_is_wrong(user_module, attribute, message):
    with pytest.raises(DatasetError, match="python:") as raised:
        load_dataset(f"python:{user_module}:{attribute}")
    assert message in str(raised.value)


def test_a_missing_module_says_how_to_make_it_importable():
    with pytest.raises(UserCodeError, match="no module named 'no_such_winnow_pkg'.*PYTHONPATH"):
        import_object("no_such_winnow_pkg.data:load")


def test_spec_checks_read_the_import_path_without_importing():
    check_dataset_spec("python:no_such_winnow_pkg.data:load")  # text only: no import
    for bad in ("python:", "python:pkg.data", "python:pkg..data:load", "python:pkg:os.system"):
        with pytest.raises(DatasetSpecError, match="python:MODULE:FUNCTION"):
            check_dataset_spec(bad)


def test_the_allow_list_admits_a_package_and_what_is_under_it():
    allowed = ("my_pkg", "tools.data")
    for path in ("my_pkg:f", "my_pkg.data:load", "my_pkg.a.b:f", "tools.data.x:f", "my_pkg"):
        check_import_allowed(path, allowed)
    for path in ("my_pkgx.data:load", "tools:f", "tools.database:f", "os:system"):
        with pytest.raises(ImportNotAllowedError) as raised:
            check_import_allowed(path, allowed, field="task.dataset")
        module = path.partition(":")[0]
        assert raised.value.module == module
        assert f"field 'task.dataset': module {module!r} is not allowed" in str(raised.value)
    with pytest.raises(ImportNotAllowedError, match="it admits none"):
        check_import_allowed("my_pkg:f", ())
    for path in ("my_pkg:os.system", "my_pkg:__class__", "my_pkg.data:_private", "my_pkg:_"):
        with pytest.raises(ImportPathError):
            check_import_allowed(path, allowed)
        with pytest.raises(ImportPathError):
            import_object(path)  # refused before anything is imported


# --- imagefolder -----------------------------------------------------------------------------


def write_image(path, size, colour, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_an_imagefolder_with_train_and_test_folders(tmp_path):
    for split, n in (("train", 3), ("test", 1)):
        for k, name in enumerate(("cat", "dog")):
            for i in range(n):
                size = (12, 10) if i == 0 else (20, 7)  # later images are resized
                write_image(tmp_path / split / name / f"{i}.png", size, (k * 200, 50, 0))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    spec = f"imagefolder:{tmp_path}"
    data = load_dataset(spec)
    assert data.input_shape == (3, 10, 12) and data.num_classes == 2
    assert (len(data.train_y), len(data.test_y)) == (6, 2)
    assert sorted(data.train_y.tolist()) == [0, 0, 0, 1, 1, 1] and data.test_y.tolist() == [0, 1]
    assert data.train_x[data.train_y == 1][:, 0].float().mean() == 200  # dog's red channel
    assert dataset_shape(spec) == ((3, 10, 12), 2)  # from the header, as the load found


def test_an_imagefolder_of_class_folders_is_split_by_a_seeded_quarter(tmp_path):
    for k, name in enumerate(("a", "b", "c")):
        for i in range(8):
            write_image(tmp_path / name / f"{i}.png", (6, 6), 30 * k + i, mode="L")
    train, test, classes = image_folder.labelled_files(str(tmp_path))
    assert classes == ["a", "b", "c"]
    assert [label for _, label in test].count(0) == 2 and len(test) == 6 and len(train) == 18
    assert not {f for f, _ in train} & {f for f, _ in test}
    assert image_folder.labelled_files(str(tmp_path)) == (train, test, classes)  # seeded
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert data.input_shape == (1, 6, 6) and data.num_classes == 3


def test_imagefolder_errors_name_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no images in class folders \['a'\]"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    write_image(tmp_path / "big" / "a" / "0.png", (300, 300), (0, 0, 0))
    write_image(tmp_path / "big" / "a" / "1.png", (300, 300), (0, 0, 0))
    with pytest.raises(DatasetError, match="resize the images first"):
        load_dataset(f"imagefolder:{tmp_path / 'big'}")
    with pytest.raises(ValueError, match="imagefolder:DIR"):
        check_dataset_spec("imagefolder:")


def test_an_imagefolder_link_leading_outside_its_folder_is_refused(tmp_path):
    """A server checked that DIR is under its --data-root: a link inside DIR to a class folder
    or an image elsewhere would read past that check."""
    folder, outside = tmp_path / "data", tmp_path / "secret"
    for name in ("a", "b"):
        for i in range(2):
            write_image(folder / name / f"{i}.png", (6, 6), 10 * i, mode="L")
    write_image(outside / "c" / "0.png", (6, 6), 1, mode="L")
    write_image(outside / "c" / "1.png", (6, 6), 2, mode="L")
    (folder / "a" / "inner.png").symlink_to(folder / "b" / "0.png")  # inside DIR: followed
    data = load_dataset(f"imagefolder:{folder}")
    assert len(data.train_y) + len(data.test_y) == 5
    (folder / "c").symlink_to(outside / "c", target_is_directory=True)
    with pytest.raises(DatasetError, match="leads outside"):  # (loads are cached: read again)
        image_folder.labelled_files(str(folder))
    (folder / "c").unlink()
    (folder / "b" / "2.png").symlink_to(outside / "c" / "0.png")
    with pytest.raises(DatasetError, match="leads outside"):
        image_folder.labelled_files(str(folder))


# --- hf ---------------------------------------------------------------------------------------


def test_hf_without_the_datasets_package_says_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # import fails
    with pytest.raises(DatasetError, match=r"pip install datasets"):
        load_dataset("hf:someone/nothing-here")


@pytest.fixture(autouse=True)
def restored_hf_environment(monkeypatch):
    """The hf loader sets the offline variables in this process: put them back after."""
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(variable, "1")


def test_hf_loads_offline_without_remote_code_and_puts_the_process_back(monkeypatch):
    """A stand-in ``datasets`` hears what the loader asks: offline while it loads, no remote
    code (where ``load_dataset`` takes ``trust_remote_code``), and afterwards the environment
    and settings are as they were."""
    import sys
    import types

    seen = {}

    def load_dataset(name, config=None, download_mode=None, trust_remote_code=None):
        seen.update(
            trust_remote_code=trust_remote_code,
            env=os.environ.get("HF_HUB_OFFLINE"),
            config=fake.config.HF_HUB_OFFLINE,
        )
        raise FileNotFoundError("not cached")

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset
    fake.config = types.SimpleNamespace(
        HF_DATASETS_OFFLINE=False, HF_HUB_OFFLINE=False, HF_DATASETS_CACHE="cache"
    )
    hub, constants = types.ModuleType("huggingface_hub"), types.ModuleType("constants")
    constants.HF_HUB_OFFLINE, hub.constants = False, constants
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setitem(sys.modules, "huggingface_hub.constants", constants)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    with pytest.raises(DatasetError, match="not in this machine's Hugging Face cache"):
        hf_data.hf_arrays("someone/remote")
    assert seen == {"trust_remote_code": False, "env": "1", "config": True}
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_DATASETS_OFFLINE"] == "0"
    assert fake.config.HF_HUB_OFFLINE is False and constants.HF_HUB_OFFLINE is False


def test_hf_names_are_hub_ids_not_local_paths(tmp_path, monkeypatch):
    for bad in ("hf:", "hf:../x", "hf:/etc", "hf:a/b/c", "hf:mnist:bad config"):
        with pytest.raises(ValueError, match="Hub dataset id"):
            check_dataset_spec(bad)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a Hub-like id that is a folder here: datasets would read it
    with pytest.raises(DatasetError, match="owner/name is a local path here"):
        hf_data.hf_arrays("owner/name")


def test_hf_not_in_the_cache_fails_naming_it(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    with pytest.raises(DatasetError) as raised:
        load_dataset("hf:someone/not-cached:main")
    message = str(raised.value)
    assert "hf:someone/not-cached:main is not in this machine's Hugging Face cache" in message
    assert "datasets.load_dataset('someone/not-cached', 'main')" in message


def test_hf_reads_a_cached_dataset_offline(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    cache_hub_dataset(datasets, tmp_path, "someone/tiny")
    data = load_dataset("hf:someone/tiny")
    assert data.input_shape == (5,) and data.num_classes == 3
    assert (len(data.train_y), len(data.test_y)) == (12, 6)


def cache_hub_dataset(datasets, tmp_path, repo: str) -> None:
    """Lay a dataset out in the cache as a download of ``repo`` would (no network): build it
    from parquet files, then move the cached build to the repo's folder (``datasets``'
    ``CachedDatasetModuleFactory`` layout: ``owner___name/config/version/hash``)."""
    import shutil

    features = datasets.Features(
        {
            "x": datasets.Sequence(datasets.Value("float32")),
            "label": datasets.ClassLabel(names=["a", "b", "c"]),
        }
    )
    rng = np.random.default_rng(0)
    files = {}
    for split, n in (("train", 12), ("test", 6)):
        rows = {"x": rng.random((n, 5)).tolist(), "label": [i % 3 for i in range(n)]}
        files[split] = str(tmp_path / f"{split}.parquet")
        datasets.Dataset.from_dict(rows, features=features).to_parquet(files[split])
    datasets.load_dataset("parquet", data_files=files)
    cache = tmp_path / "cache"
    built = next(p for p in (cache / "parquet").glob("*/*/*") if p.is_dir())
    owner, name = repo.split("/")
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / built.name
    shutil.copytree(built, target)
    for arrow in target.glob("parquet-*.arrow"):
        arrow.rename(target / arrow.name.replace("parquet", name, 1))
