"""Tests of nas_optuna.metrics against hand arithmetic and an independent scikit-learn oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, jaccard_score, recall_score

from nas_optuna.metrics import ConfusionMatrix, reward, segmentation_metrics

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KEYS = {"miou", "macc", "fwiou", "pixel_accuracy", "reward"}


def _sklearn_metrics(
    target: np.ndarray,
    prediction: np.ndarray,
    num_classes: int,
    omit_classes: tuple[int, ...] = (),
) -> dict[str, float]:
    """Reference built only from scikit-learn and numpy, sharing no code with the module.

    Omitted classes are handled as documented: their pixels are dropped (like ignored
    pixels) and they are not among the averaged labels, while predictions of them stay.
    """
    t = target.reshape(-1)
    p = prediction.reshape(-1)
    counted = (t < num_classes) & ~np.isin(t, omit_classes)
    t, p = t[counted], p[counted]
    labels = [c for c in range(num_classes) if c not in omit_classes]

    cm = confusion_matrix(t, p, labels=list(range(num_classes)))
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    present = np.array([union[c] > 0 for c in labels])

    # Absent classes get 0 here but are masked out by `present` below.
    iou = jaccard_score(t, p, labels=labels, average=None, zero_division=0)
    # Cross-check sklearn's jaccard against IoU from its confusion matrix.
    np.testing.assert_allclose(iou[present], (tp / np.where(union > 0, union, 1))[labels][present])
    recall = recall_score(t, p, labels=labels, average=None, zero_division=np.nan)
    support = np.array([(t == c).sum() for c in labels], dtype=float)

    return {
        "miou": float(np.mean(iou[present])),
        "macc": float(np.nanmean(recall)),
        "fwiou": float(np.sum(support[present] / support.sum() * iou[present])),
        "pixel_accuracy": float(np.mean(t == p)),
    }


def _random_batch(
    seed: int, num_classes: int, shape: tuple[int, int, int] = (2, 12, 10)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels over the first num_classes - 1 classes (the last one is absent everywhere),
    about 10% ignore pixels, and predictions right about 60% of the time."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes - 1, size=shape)
    target[rng.random(shape) < 0.1] = 255
    prediction = np.where(
        rng.random(shape) < 0.6,
        np.minimum(target, num_classes - 2),
        rng.integers(0, num_classes - 1, size=shape),
    )
    return torch.from_numpy(prediction), torch.from_numpy(target)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("omit_classes", [(), (0,)])
def test_matches_sklearn_on_random_predictions(seed: int, omit_classes: tuple[int, ...]) -> None:
    num_classes = 6
    prediction, target = _random_batch(seed, num_classes)
    cm = ConfusionMatrix(num_classes)
    cm.update(prediction, target)
    got = cm.compute(omit_classes)
    expected = _sklearn_metrics(target.numpy(), prediction.numpy(), num_classes, omit_classes)

    assert set(got) == KEYS
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["reward"] == pytest.approx(
        (expected["miou"] * expected["macc"] * expected["fwiou"]) ** (1 / 3), rel=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_matches_sklearn_confusion_matrix(seed: int) -> None:
    prediction, target = _random_batch(seed, num_classes=5)
    cm = ConfusionMatrix(5)
    cm.update(prediction, target)
    t, p = target.numpy().ravel(), prediction.numpy().ravel()
    expected = confusion_matrix(t[t < 5], p[t < 5], labels=range(5))
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.matrix.numpy(), expected)


# target: 0 0 0 0 | 1 1 | 2 2 | 255        matrix (rows true, cols predicted):
# pred:   0 0 0 1 | 1 1 | 0 2 | 1          [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
_HAND_TARGET = torch.tensor([[[0, 0, 0, 0, 1, 1, 2, 2, 255]]])
_HAND_PREDICTION = torch.tensor([[[0, 0, 0, 1, 1, 1, 0, 2, 1]]])


def test_hand_computed_example() -> None:
    cm = ConfusionMatrix(3)
    cm.update(_HAND_PREDICTION, _HAND_TARGET)
    assert cm.matrix.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    m = cm.compute()
    # IoU: class 0: 3 / (4 + 4 - 3) = 3/5; class 1: 2 / (2 + 3 - 2) = 2/3;
    #      class 2: 1 / (2 + 1 - 1) = 1/2.  miou = (3/5 + 2/3 + 1/2) / 3 = 53/90.
    assert m["miou"] == pytest.approx(53 / 90, rel=1e-14)
    # Recall: 3/4, 2/2, 1/2.  macc = (3/4 + 1 + 1/2) / 3 = 3/4.
    assert m["macc"] == pytest.approx(3 / 4, rel=1e-14)
    # fwiou = (4 * 3/5 + 2 * 2/3 + 2 * 1/2) / 8 = (71/15) / 8 = 71/120.
    assert m["fwiou"] == pytest.approx(71 / 120, rel=1e-14)
    # 6 of 8 counted pixels correct; the ignored one is not counted.
    assert m["pixel_accuracy"] == pytest.approx(6 / 8, rel=1e-14)
    assert m["reward"] == pytest.approx((53 / 90 * 3 / 4 * 71 / 120) ** (1 / 3), rel=1e-14)


def test_hand_computed_example_omitting_background() -> None:
    cm = ConfusionMatrix(3)
    cm.update(_HAND_PREDICTION, _HAND_TARGET)
    m = cm.compute(omit_classes=[0])
    # Row 0 dropped -> [[0, 0, 0], [0, 2, 0], [1, 0, 1]]; class 0 not averaged.
    # IoU: class 1: 2 / (2 + 2 - 2) = 1 (the true-0 pixel predicted 1 no longer counts);
    #      class 2: 1 / (2 + 1 - 1) = 1/2 (the true-2 pixel predicted 0 still counts).
    # miou = 3/4; macc = (1 + 1/2) / 2 = 3/4; fwiou = (2 * 1 + 2 * 1/2) / 4 = 3/4;
    # pixel accuracy = 3/4; reward = 3/4.
    for key in KEYS:
        assert m[key] == pytest.approx(0.75, rel=1e-14), key


def test_omitted_class_differs_from_kept_class() -> None:
    matrix = np.array([[5, 5, 0], [5, 5, 0], [0, 0, 10]])
    kept = segmentation_metrics(matrix)
    omitted = segmentation_metrics(matrix, omit_classes=(0,))
    # Kept: IoU 1/3, 1/3, 1 -> 5/9.  Omitted: row 0 gone -> IoU_1 = 5/10, IoU_2 = 1 -> 3/4.
    assert kept["miou"] == pytest.approx(5 / 9)
    assert omitted["miou"] == pytest.approx(3 / 4)
    # Omitting everything leaves no counted pixel.
    assert segmentation_metrics(matrix, omit_classes=(0, 1, 2)) == dict.fromkeys(KEYS, 0.0)


def test_omit_classes_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="omit_classes"):
        segmentation_metrics(np.eye(3), omit_classes=(3,))


def test_ignore_label_never_counted() -> None:
    target = torch.tensor([[[0, 1, 255, 255], [1, 7, 0, 255]]])  # 7 >= num_classes
    prediction_a = torch.tensor([[[0, 1, 0, 1], [1, 0, 0, 2]]])
    prediction_b = torch.tensor([[[0, 1, 2, 2], [1, 2, 0, 0]]])  # differs only where ignored
    cm_a, cm_b = ConfusionMatrix(3), ConfusionMatrix(3)
    cm_a.update(prediction_a, target)
    cm_b.update(prediction_b, target)
    assert cm_a.matrix.sum().item() == 4
    assert torch.equal(cm_a.matrix, cm_b.matrix)
    assert cm_a.compute() == cm_b.compute()


def test_custom_ignore_index() -> None:
    target = torch.tensor([[[0, 1, 2, 2]]])
    cm = ConfusionMatrix(3, ignore_index=2)
    cm.update(torch.tensor([[[0, 1, 0, 0]]]), target)
    assert cm.matrix.sum().item() == 2
    assert cm.compute()["miou"] == 1.0


def test_all_pixels_ignored_gives_zeros_not_nan() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.zeros(1, 3, 3, dtype=torch.long), torch.full((1, 3, 3), 255))
    m = cm.compute()
    assert m == dict.fromkeys(KEYS, 0.0)
    assert not any(math.isnan(v) for v in m.values())
    assert ConfusionMatrix(4).compute() == dict.fromkeys(KEYS, 0.0)  # never updated


def test_absent_classes_are_dropped() -> None:
    prediction, target = _random_batch(5, num_classes=4)  # class 3 never occurs
    small, large = ConfusionMatrix(4), ConfusionMatrix(9)
    small.update(prediction, target)
    large.update(prediction, target)
    assert small.compute() == pytest.approx(large.compute(), rel=1e-14)
    # Counting the absent classes as IoU 0 would have lowered miou: 3 present of 9.
    assert large.compute()["miou"] > 3 / 9


def test_predicted_but_unlabelled_class_counts_in_miou_not_macc() -> None:
    # Class 1 is predicted once but never labelled: present for IoU (IoU 0), while its
    # recall is undefined and left out of macc.
    m = segmentation_metrics(np.array([[3, 1], [0, 0]]))
    assert m["miou"] == pytest.approx((3 / 4 + 0) / 2)
    assert m["macc"] == pytest.approx(3 / 4)
    assert m["fwiou"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("device", DEVICES)
def test_logits_upsampled_equal_argmax_path(device: str) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 6, generator=generator).to(device)
    target = torch.randint(0, 5, (2, 16, 24), generator=generator).to(device)
    target[:, :2] = 255

    from_logits = ConfusionMatrix(5)
    from_logits.update(logits, target)
    upsampled = F.interpolate(logits, size=(16, 24), mode="bilinear", align_corners=False)
    from_indices = ConfusionMatrix(5)
    from_indices.update(upsampled.argmax(1), target)

    assert torch.equal(from_logits.matrix, from_indices.matrix)
    assert from_logits.matrix.sum().item() == 2 * 14 * 24
    # Upsampling matters: nearest-neighbour indices would give a different matrix here.
    nearest = ConfusionMatrix(5)
    nearest.update(F.interpolate(logits, size=(16, 24), mode="nearest").argmax(1), target)
    assert not torch.equal(nearest.matrix, from_logits.matrix)


def test_logits_of_target_size_are_argmaxed() -> None:
    logits = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 3, (1, 5, 5), generator=torch.Generator().manual_seed(2))
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.matrix, b.matrix)


def test_logits_requiring_grad_are_accepted() -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    cm = ConfusionMatrix(3)
    cm.update(logits * 2, torch.zeros(1, 4, 4, dtype=torch.long))
    assert cm.matrix.sum().item() == 16


@pytest.mark.parametrize("device", DEVICES)
def test_perfect_prediction_gives_reward_one(device: str) -> None:
    target = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(3))
    target[0, 0] = 255
    cm = ConfusionMatrix(4, device=device)
    cm.update(target.clamp(max=3).to(device), target.to(device))
    assert cm.matrix.device.type == device
    m = cm.compute()
    assert m == dict.fromkeys(KEYS, 1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_accumulating_batches_equals_one_shot(device: str) -> None:
    prediction, target = _random_batch(7, num_classes=5, shape=(6, 8, 8))
    prediction, target = prediction.to(device), target.to(device)
    one_shot = ConfusionMatrix(5)
    one_shot.update(prediction, target)
    batched = ConfusionMatrix(5)
    for start in range(0, 6, 2):
        batched.update(prediction[start : start + 2], target[start : start + 2])
    assert batched.matrix.device.type == device
    assert torch.equal(one_shot.matrix, batched.matrix)
    assert one_shot.compute() == batched.compute()


def test_reset_zeroes_counts() -> None:
    cm = ConfusionMatrix(3)
    cm.update(_HAND_PREDICTION, _HAND_TARGET)
    cm.reset()
    assert cm.matrix.sum().item() == 0
    cm.update(_HAND_PREDICTION, _HAND_TARGET)
    assert cm.matrix.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_matrix_property_is_a_copy() -> None:
    cm = ConfusionMatrix(3)
    cm.update(_HAND_PREDICTION, _HAND_TARGET)
    cm.matrix.zero_()
    assert cm.matrix.sum().item() == 8


def test_out_of_range_prediction_raises_at_compute() -> None:
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[[0, 3, 1]]]), torch.tensor([[[0, 1, 255]]]))
    with pytest.raises(ValueError, match="outside"):
        cm.compute()
    # An out-of-range prediction on an ignored pixel is harmless.
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[[0, 9]]]), torch.tensor([[[0, 255]]]))
    assert cm.compute()["reward"] == 1.0


@pytest.mark.parametrize(
    ("prediction", "target"),
    [
        (torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long)),
        (torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)),  # wrong C
        (torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)),  # float indices
        (torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4)),  # float target
        (torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long)),
    ],
)
def test_bad_shapes_and_dtypes_raise(prediction: torch.Tensor, target: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        ConfusionMatrix(3).update(prediction, target)


def test_segmentation_metrics_accepts_tensor_and_array() -> None:
    matrix = np.array([[3, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert segmentation_metrics(torch.from_numpy(matrix)) == segmentation_metrics(matrix)
    assert segmentation_metrics(matrix)["miou"] == pytest.approx(53 / 90)
    matrix_copy = matrix.copy()
    segmentation_metrics(matrix_copy, omit_classes=(0,))
    np.testing.assert_array_equal(matrix_copy, matrix)  # caller's array untouched


@pytest.mark.parametrize("matrix", [np.zeros((2, 3)), np.array([[1, -1], [0, 1]])])
def test_segmentation_metrics_rejects_bad_matrix(matrix: np.ndarray) -> None:
    with pytest.raises(ValueError):
        segmentation_metrics(matrix)


def test_reward_is_geometric_mean() -> None:
    assert reward({"miou": 0.5, "macc": 0.5, "fwiou": 0.5}) == 0.5
    assert reward({"miou": 0.2, "macc": 0.4, "fwiou": 0.8}) == pytest.approx(0.4, rel=1e-15)
    assert reward({"miou": 1.0, "macc": 1.0, "fwiou": 1.0, "extra": 3.0}) == 1.0
    assert reward({"miou": 0.0, "macc": 0.9, "fwiou": 0.9}) == 0.0
    with pytest.raises(KeyError):
        reward({"miou": 1.0, "macc": 1.0})
    with pytest.raises(ValueError):
        reward({"miou": float("nan"), "macc": 1.0, "fwiou": 1.0})
