"""SegmentationDataset (the torch view) and the dataset registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_optuna.data import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CamVid,
    Cityscapes,
    FolderDataset,
    PascalVOC,
    SegmentationDataset,
    SegmentationSource,
    SyntheticStreetScenes,
    build_dataset,
    build_transforms,
)
from nas_optuna.exceptions import ConfigError, DatasetError, UnknownNameError


@pytest.fixture(scope="module")
def source() -> SyntheticStreetScenes:
    return SyntheticStreetScenes(num_images=12, image_size=(32, 48), num_classes=6)


def test_items_are_normalised_tensors(source: SyntheticStreetScenes) -> None:
    image, mask = SegmentationDataset(source)[3]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 48)
    assert mask.dtype == torch.int64 and mask.shape == (32, 48)
    raw_image, raw_mask = source.load(3)
    expected = (raw_image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD  # default: normalise only
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(mask.numpy(), raw_mask)


def test_indices_select_and_order_samples(source: SyntheticStreetScenes) -> None:
    view = SegmentationDataset(source, indices=[7, 2, 7])
    assert len(view) == 3 and len(SegmentationDataset(source)) == 12
    for position, index in enumerate([7, 2, 7]):
        np.testing.assert_array_equal(view[position][1].numpy(), source.load(index)[1])
    assert view.num_classes == 6 and view.class_names == source.class_names
    assert view.ignore_index == 255


def test_out_of_range_indices(source: SyntheticStreetScenes) -> None:
    with pytest.raises(IndexError):
        SegmentationDataset(source, indices=[0, 12])


def test_batches_through_a_dataloader(source: SyntheticStreetScenes) -> None:
    view = SegmentationDataset(source, transform=build_transforms(train=True, crop_size=(24, 24)))
    images, masks = next(iter(torch.utils.data.DataLoader(view, batch_size=4)))
    assert images.shape == (4, 3, 24, 24) and masks.shape == (4, 24, 24)


def _first_items(view: SegmentationDataset, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(view, batch_size=1, num_workers=2)
    return [images[0] for images, _ in loader]


def test_workers_get_different_but_reproducible_augmentations(
    source: SyntheticStreetScenes,
) -> None:
    # The same sample four times: worker 0 serves items 0 and 2, worker 1 items 1 and 3.
    # Without reseeding, both workers inherit one RNG state and items 0 and 1 would match.
    transform = build_transforms(train=True, crop_size=(16, 16), seed=0)
    view = SegmentationDataset(source, indices=[0, 0, 0, 0], transform=transform)
    first = _first_items(view, seed=0)
    assert not torch.equal(first[0], first[1])
    again = _first_items(view, seed=0)
    assert len(first) == len(again) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_registry_names() -> None:
    assert set(DATASETS.names()) == {"synthetic", "folder", "camvid", "cityscapes", "voc"}
    assert DATASETS.get("camvid") is CamVid and DATASETS.get("cityscapes") is Cityscapes
    assert DATASETS.get("voc") is PascalVOC and DATASETS.get("folder") is FolderDataset


def test_build_dataset_passes_options() -> None:
    built = build_dataset("synthetic", num_images=5, image_size=[32, 48], num_classes=3)
    assert isinstance(built, SegmentationSource) and len(built) == 5
    assert built.load(0)[0].shape == (32, 48, 3)  # a TOML list works as the size
    assert json.loads(json.dumps(built.describe())) == built.describe()


def test_unknown_dataset_name() -> None:
    with pytest.raises(UnknownNameError) as err:
        build_dataset("imagenet")
    assert isinstance(err.value, ConfigError) and "synthetic" in str(err.value)


def test_unknown_option_names_it_and_lists_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as err:
        build_dataset("synthetic", num_image=10)
    message = str(err.value)
    assert "'num_image'" in message
    for accepted in ("num_images", "image_size", "num_classes", "seed"):
        assert accepted in message


def test_missing_required_option() -> None:
    with pytest.raises(ConfigError) as err:
        build_dataset("folder", num_classes=3)
    assert "'root'" in str(err.value) and "label_map" in str(err.value)


def test_invalid_option_value() -> None:
    with pytest.raises(ConfigError):
        build_dataset("synthetic", num_classes=42)


def test_dataset_errors_pass_through(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset folder not found"):
        build_dataset("camvid", root=str(tmp_path / "CamVid"))


def test_folder_through_the_registry(tmp_path: Path, write_image: Callable, rgb: Callable) -> None:
    write_image(tmp_path / "images" / "a.png", rgb(4, 4))
    write_image(tmp_path / "masks" / "a.png", np.full((4, 4), 9, np.uint8))
    built = build_dataset("folder", root=str(tmp_path), num_classes=2, label_map={"9": 1})
    assert built.load(0)[1].max() == 1


def test_reseed_restarts_the_augmentation_stream(source: SyntheticStreetScenes) -> None:
    dataset = SegmentationDataset(source, range(4), build_transforms(train=True,
                                                                     crop_size=(24, 24)))
    dataset.reseed(7)
    first = [dataset[i][0] for i in range(4)]
    dataset.reseed(7)
    again = [dataset[i][0] for i in range(4)]
    dataset.reseed(8)
    other = [dataset[i][0] for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
