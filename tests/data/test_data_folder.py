"""The generic ``folder`` dataset, and the file checks every file-based dataset shares."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nas_optuna.data import IGNORE_INDEX, FolderDataset, SegmentationDataset
from nas_optuna.exceptions import ConfigError, DatasetError


def _mask(height: int, width: int, value: int) -> np.ndarray:
    return np.full((height, width), value, dtype=np.uint8)


@pytest.fixture
def tree(tmp_path: Path, write_image: Callable, rgb: Callable) -> Path:
    """root/images/{a.png,b.jpg,c.bmp,d.tif} with masks labelled 0..3 and a stray mask."""
    root = tmp_path / "roads"
    for value, name in enumerate(["a.png", "b.jpg", "c.bmp", "d.tif"]):
        write_image(root / "images" / name, rgb(12, 16, seed=value))
        write_image(root / "masks" / f"{Path(name).stem}.png", _mask(12, 16, value))
    write_image(root / "masks" / "zzz_without_image.png", _mask(12, 16, 0))  # ignored
    (root / "images" / "notes.txt").write_text("not an image")  # ignored
    return root


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_pairs_images_and_masks_by_stem(tree: Path, rgb: Callable) -> None:
    source = FolderDataset(tree, num_classes=4)
    assert len(source) == 4
    for index, stem in enumerate("abcd"):
        image, mask = source.load(index)
        assert source.pairs[index][0].stem == stem
        assert image.shape == (12, 16, 3) and image.dtype == np.uint8
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {index}
    # Lossless formats come back bit-exact, as arrays the caller owns.
    image, mask = source.load(0)
    np.testing.assert_array_equal(image, rgb(12, 16, seed=0))
    assert image.flags.writeable and mask.flags.writeable


def test_serves_tensors_without_warnings(tree: Path) -> None:
    view = SegmentationDataset(FolderDataset(tree, num_classes=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable NumPy array" warning
        image, mask = view[3]
    assert image.shape == (3, 12, 16) and int(mask.max()) == 3


def test_class_names_default_and_custom(tree: Path) -> None:
    assert FolderDataset(tree, 4).class_names == ("class_0", "class_1", "class_2", "class_3")
    names = ("road", "car", "sky", "tree")
    assert FolderDataset(tree, 4, class_names=names).class_names == names
    with pytest.raises(ConfigError):
        FolderDataset(tree, 4, class_names=("road", "car"))


def test_custom_subfolders(tmp_path: Path, write_image: Callable, rgb: Callable) -> None:
    write_image(tmp_path / "img" / "x.jpeg", rgb(8, 8))
    write_image(tmp_path / "lbl" / "x.png", _mask(8, 8, 1))
    source = FolderDataset(tmp_path, 2, images="img", masks="lbl")
    assert len(source) == 1 and source.load(0)[1].max() == 1


def test_label_map_converts_before_validation(
    tmp_path: Path, write_image: Callable, rgb: Callable
) -> None:
    mask = np.array([[0, 1, 9, 255]], dtype=np.uint8)
    write_image(tmp_path / "images" / "x.png", rgb(1, 4))
    write_image(tmp_path / "masks" / "x.png", mask)
    # TOML tables have string keys; both spellings work.
    for label_map in ({9: 255}, {"9": 255}):
        source = FolderDataset(tmp_path, 2, label_map=label_map)
        np.testing.assert_array_equal(source.load(0)[1], [[0, 1, IGNORE_INDEX, IGNORE_INDEX]])
    swapped = FolderDataset(tmp_path, 2, label_map={0: 1, 1: 0, 9: 0})
    np.testing.assert_array_equal(swapped.load(0)[1], [[1, 0, 0, IGNORE_INDEX]])
    with pytest.raises(DatasetError):  # without the map, 9 is not a class
        FolderDataset(tmp_path, 2).load(0)


@pytest.mark.parametrize("label_map", [{9: 5}, {300: 0}, {"x": 1}])
def test_invalid_label_map_raises_config_error(tree: Path, label_map: dict) -> None:
    with pytest.raises(ConfigError):
        FolderDataset(tree, 4, label_map=label_map)


@pytest.mark.parametrize("num_classes", [0, 1, 255, 3.5, True])
def test_invalid_num_classes_raises_config_error(tree: Path, num_classes: object) -> None:
    with pytest.raises(ConfigError):
        FolderDataset(tree, num_classes)  # type: ignore[arg-type]


def test_missing_root_or_subfolder(tmp_path: Path, tree: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        FolderDataset(missing, 4)
    assert _one_line(err) == f"dataset folder not found: {missing}"
    with pytest.raises(DatasetError) as err:
        FolderDataset(tree, 4, masks="labels")
    assert _one_line(err) == f"dataset folder not found: {tree / 'labels'}"


def test_image_without_mask_is_named(tree: Path, write_image: Callable, rgb: Callable) -> None:
    orphan = write_image(tree / "images" / "orphan.png", rgb(12, 16))
    with pytest.raises(DatasetError) as err:
        FolderDataset(tree, 4)
    assert str(orphan) in _one_line(err)


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, 2)
    assert "no images" in _one_line(err)


def test_two_images_with_one_stem(tree: Path, write_image: Callable, rgb: Callable) -> None:
    write_image(tree / "images" / "a.jpg", rgb(12, 16))
    with pytest.raises(DatasetError) as err:
        FolderDataset(tree, 4)
    assert "'a'" in _one_line(err)


def test_size_mismatch_names_both_files_and_sizes(
    tmp_path: Path, write_image: Callable, rgb: Callable
) -> None:
    image = write_image(tmp_path / "images" / "x.png", rgb(24, 32))
    mask = write_image(tmp_path / "masks" / "x.png", _mask(20, 30, 0))
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, 2).load(0)
    message = _one_line(err)
    assert str(image) in message and str(mask) in message
    assert "32x24" in message and "30x20" in message


def test_labels_out_of_range_name_file_and_values(
    tmp_path: Path, write_image: Callable, rgb: Callable
) -> None:
    write_image(tmp_path / "images" / "x.png", rgb(2, 3))
    mask = write_image(tmp_path / "masks" / "x.png", np.array([[0, 1, 2], [7, 200, 255]], np.uint8))
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, 3).load(0)
    message = _one_line(err)
    assert str(mask) in message and "7, 200" in message
    assert " 2," not in message and "255," not in message  # valid values are not listed


def test_sixteen_bit_mask_values_above_255_are_reported(
    tmp_path: Path, write_image: Callable, rgb: Callable
) -> None:
    write_image(tmp_path / "images" / "x.png", rgb(1, 3))
    write_image(tmp_path / "masks" / "x.png", np.array([[0, 1, 300]], np.uint16))
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, 2).load(0)
    assert "300" in _one_line(err)
    write_image(tmp_path / "masks" / "x.png", np.array([[0, 1, 255]], np.uint16))
    np.testing.assert_array_equal(FolderDataset(tmp_path, 2).load(0)[1], [[0, 1, 255]])


def test_colour_mask_is_rejected(tmp_path: Path, write_image: Callable, rgb: Callable) -> None:
    write_image(tmp_path / "images" / "x.png", rgb(4, 4))
    mask = write_image(tmp_path / "masks" / "x.png", rgb(4, 4, seed=1))
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, 2).load(0)
    assert str(mask) in _one_line(err)


def test_palette_and_greyscale_inputs(tmp_path: Path, write_image: Callable) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_image(tmp_path / "images" / "x.png", grey)  # greyscale image -> RGB
    write_image(tmp_path / "masks" / "x.png", np.array([[0, 1, 1, 0]] * 3, np.uint8), palette=True)
    image, mask = FolderDataset(tmp_path, 2).load(0)
    assert image.shape == (3, 4, 3)
    np.testing.assert_array_equal(image[..., 1], grey)
    np.testing.assert_array_equal(mask, [[0, 1, 1, 0]] * 3)  # indices, not palette colours


@pytest.mark.parametrize("content", [b"", b"this is not a png", "truncated"])
def test_corrupt_image_is_named(
    tmp_path: Path, write_image: Callable, rgb: Callable, content: bytes | str
) -> None:
    good = write_image(tmp_path / "good.png", rgb(64, 64))
    image = tmp_path / "images" / "x.png"
    image.parent.mkdir()
    image.write_bytes(good.read_bytes()[:200] if content == "truncated" else content)
    write_image(tmp_path / "masks" / "x.png", _mask(64, 64, 0))
    source = FolderDataset(tmp_path, 2)  # files are only decoded when loaded
    with pytest.raises(DatasetError) as err:
        source.load(0)
    message = _one_line(err)
    assert str(image) in message and message.startswith("cannot read image")


def test_corrupt_mask_is_named(tmp_path: Path, write_image: Callable, rgb: Callable) -> None:
    write_image(tmp_path / "images" / "x.png", rgb(4, 4))
    mask = tmp_path / "masks" / "x.png"
    mask.parent.mkdir()
    mask.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError) as err:
        FolderDataset(tmp_path, 2).load(0)
    assert str(mask) in _one_line(err)


def test_index_out_of_range(tree: Path) -> None:
    with pytest.raises(IndexError):
        FolderDataset(tree, 4).load(4)


def test_describe(tree: Path) -> None:
    info = FolderDataset(tree, 4, label_map={3: 255}).describe()
    assert json.loads(json.dumps(info)) == info
    assert info["name"] == "folder" and info["root"] == str(tree.resolve())
    assert info["size"] == 4 and info["num_classes"] == 4
    assert info["label_map"] == {"3": 255}


def test_describe_changes_when_a_file_changes(tmp_path) -> None:
    import os

    from PIL import Image

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / f"{i}.png")
    before = FolderDataset(root, num_classes=2).describe()
    assert FolderDataset(root, num_classes=2).describe() == before
    mask = root / "masks" / "1.png"
    Image.fromarray(np.ones((4, 4), np.uint8)).save(mask)
    os.utime(mask, ns=(1, 1))
    assert FolderDataset(root, num_classes=2).describe()["files"] != before["files"]
