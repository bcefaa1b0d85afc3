"""The embedded default dataset: determinism, labels, merges, and the road/sidewalk pair."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas_optuna.data import (
    IGNORE_INDEX,
    SYNTHETIC_CLASSES,
    SyntheticStreetScenes,
    merged_class_names,
    render_street_scene,
)
from nas_optuna.data._synthetic import merged_label_table
from nas_optuna.exceptions import ConfigError

ROAD, SIDEWALK = SYNTHETIC_CLASSES.index("road"), SYNTHETIC_CLASSES.index("sidewalk")
SIZE = (96, 128)


@pytest.fixture(scope="module")
def full() -> SyntheticStreetScenes:
    """All 10 generator classes; module-scoped so the generated samples are reused."""
    return SyntheticStreetScenes(num_images=48, num_classes=len(SYNTHETIC_CLASSES), seed=0)


def test_same_seed_gives_identical_samples() -> None:
    a = SyntheticStreetScenes(num_images=6, seed=3)
    b = SyntheticStreetScenes(num_images=6, seed=3)
    for i in (5, 0, 3):  # access order must not matter
        image_a, mask_a = a.load(i)
        image_b, mask_b = b.load(i)
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(mask_a, mask_b)


def test_different_seeds_and_indices_give_different_samples() -> None:
    image_0, mask_0 = SyntheticStreetScenes(num_images=2, seed=0).load(0)
    image_1, mask_1 = SyntheticStreetScenes(num_images=2, seed=1).load(0)
    other_image, _ = SyntheticStreetScenes(num_images=2, seed=0).load(1)
    assert not np.array_equal(image_0, image_1)
    assert not np.array_equal(mask_0, mask_1)
    assert not np.array_equal(image_0, other_image)


def test_shapes_and_dtypes() -> None:
    source = SyntheticStreetScenes(num_images=3, image_size=(40, 72), num_classes=6)
    assert len(source) == 3
    image, mask = source.load(2)
    assert image.shape == (40, 72, 3) and image.dtype == np.uint8
    assert mask.shape == (40, 72) and mask.dtype == np.uint8
    assert source.num_classes == 6 and len(source.class_names) == 6
    assert source.ignore_index == IGNORE_INDEX == 255


def test_load_returns_copies_not_the_cache() -> None:
    source = SyntheticStreetScenes(num_images=1)
    image, mask = source.load(0)
    expected_image, expected_mask = image.copy(), mask.copy()
    image[:] = 0
    mask[:] = 0
    again_image, again_mask = source.load(0)
    np.testing.assert_array_equal(again_image, expected_image)
    np.testing.assert_array_equal(again_mask, expected_mask)


def test_every_class_appears_within_a_few_dozen_images(full: SyntheticStreetScenes) -> None:
    seen: set[int] = set()
    for i in range(36):
        seen |= set(np.unique(full.load(i)[1]).tolist())
    assert seen == set(range(len(SYNTHETIC_CLASSES))) | {IGNORE_INDEX}


def test_every_image_has_ignore_pixels_but_not_too_many(full: SyntheticStreetScenes) -> None:
    # The kerb is always drawn (at least one side has a sidewalk), so 255 is in every image.
    for i in range(24):
        share = float(np.mean(full.load(i)[1] == IGNORE_INDEX))
        assert 0.0 < share < 0.15, (i, share)


@pytest.mark.parametrize("num_classes", range(2, len(SYNTHETIC_CLASSES) + 1))
def test_labels_in_range_and_all_present_for_every_num_classes(num_classes: int) -> None:
    source = SyntheticStreetScenes(num_images=30, num_classes=num_classes, seed=1)
    seen: set[int] = set()
    for i in range(len(source)):
        seen |= set(np.unique(source.load(i)[1]).tolist())
    assert seen == set(range(num_classes)) | {IGNORE_INDEX}
    assert len(source.class_names) == num_classes
    assert len(set(source.class_names)) == num_classes


def test_fewer_classes_merge_labels_and_keep_images(full: SyntheticStreetScenes) -> None:
    coarse = SyntheticStreetScenes(num_images=48, num_classes=6, seed=0)
    table = merged_label_table(6)
    for i in range(4):
        fine_image, fine_mask = full.load(i)
        coarse_image, coarse_mask = coarse.load(i)
        np.testing.assert_array_equal(coarse_image, fine_image)
        np.testing.assert_array_equal(coarse_mask, table[fine_mask])


def test_documented_merge_order() -> None:
    index = SYNTHETIC_CLASSES.index

    def merged(name: str, num_classes: int) -> int:
        return int(merged_label_table(num_classes)[index(name)])

    assert merged("traffic_sign", 9) == index("pole")
    assert merged("lane_marking", 8) == index("road")
    assert merged("person", 7) == index("car")
    assert merged("vegetation", 6) == index("building")
    assert merged("pole", 5) == index("building")
    assert merged("car", 4) == index("building")
    assert merged("sky", 3) == index("building")
    assert merged("building", 2) == index("sidewalk")
    assert merged("traffic_sign", 2) == 1  # chains all the way down
    assert merged_label_table(4)[IGNORE_INDEX] == IGNORE_INDEX
    assert merged_class_names(10) == SYNTHETIC_CLASSES
    assert merged_class_names(6) == (
        "road+lane_marking",
        "sidewalk",
        "building+vegetation",
        "sky",
        "car+person",
        "pole+traffic_sign",
    )
    assert merged_class_names(2) == ("road+lane_marking", "background")


def test_road_and_sidewalk_share_their_appearance(full: SyntheticStreetScenes) -> None:
    """The context pair: same colour and texture statistics, only the place differs."""
    road_means, walk_means, road_texture, walk_texture = [], [], [], []
    for i in range(len(full)):
        image, mask = full.load(i)
        pixels = image.astype(np.float64)
        road, walk = mask == ROAD, mask == SIDEWALK
        if road.sum() < 100 or walk.sum() < 100:
            continue
        road_means.append(pixels[road].mean(axis=0))
        walk_means.append(pixels[walk].mean(axis=0))
        # Local texture: mean absolute difference of horizontal neighbours inside a class.
        step = np.abs(np.diff(pixels, axis=1)).mean(axis=2)
        road_texture.append(step[road[:, 1:] & road[:, :-1]].mean())
        walk_texture.append(step[walk[:, 1:] & walk[:, :-1]].mean())
    assert len(road_means) >= 40
    mean_gap = np.abs(np.mean(road_means, axis=0) - np.mean(walk_means, axis=0))
    assert mean_gap.max() < 4.0, mean_gap  # of 0..255; per-image spread is ~40
    assert np.mean(road_texture) == pytest.approx(np.mean(walk_texture), rel=0.1)
    # The pair is not trivially identical: the two classes cover different pixels.
    assert np.mean(np.std(road_means, axis=0)) > 10.0


def test_same_scene_at_every_resolution() -> None:
    _, small = render_street_scene(0, 4, (48, 64))
    _, large = render_street_scene(0, 4, (96, 128))
    agreement = np.mean(small == large[::2, ::2])
    assert agreement > 0.85


def test_describe_is_json_and_identifies_the_samples() -> None:
    info = SyntheticStreetScenes(
        num_images=10, image_size=(32, 48), num_classes=4, seed=2
    ).describe()
    assert json.loads(json.dumps(info)) == info
    assert info["name"] == "synthetic" and info["size"] == 10 and info["num_classes"] == 4
    assert info["image_size"] == [32, 48] and info["seed"] == 2
    assert "generator_version" in info and "root" not in info
    other = SyntheticStreetScenes(num_images=10, image_size=(32, 48), num_classes=4, seed=3)
    assert other.describe() != info


@pytest.mark.parametrize(
    "options",
    [
        {"num_classes": 1},
        {"num_classes": 11},
        {"num_images": 0},
        {"image_size": (8, 128)},
        {"image_size": (96,)},
        {"seed": -1},
    ],
)
def test_invalid_options_raise_config_error(options: dict) -> None:
    with pytest.raises(ConfigError):
        SyntheticStreetScenes(**options)


def test_out_of_range_index_raises_index_error() -> None:
    source = SyntheticStreetScenes(num_images=2)
    with pytest.raises(IndexError):
        source.load(2)
    with pytest.raises(IndexError):
        source.load(-1)
