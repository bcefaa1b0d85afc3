"""Semantic-segmentation metrics and the search reward of the Nekrasov et al. papers.

Every number comes from one confusion matrix accumulated over the whole validation set;
metrics are never averaged per batch or per image.

Conventions:
    * The confusion matrix is ``(C, C)`` ``int64`` with **rows = true class** and
      **columns = predicted class**: ``matrix[t, p]`` counts pixels labelled ``t`` and
      predicted ``p``.
    * A pixel is ignored (counted nowhere) when its label equals ``ignore_index`` (255 by
      default, the VOC / Cityscapes void label) or lies outside ``[0, num_classes)``.
    * A class is *present* when it occurs in the labels or in the predictions (its row or
      column sum is non-zero). Absent classes are dropped from every mean, so enlarging
      ``num_classes`` with classes that never occur changes nothing.
    * Per-class IoU is ``tp / (tp + fp + fn)`` and is averaged over present classes: a
      class that is predicted but never labelled is present and contributes an IoU of 0.
      Per-class accuracy is the recall ``tp / (tp + fn)``; it is undefined for classes
      without labelled pixels, so ``macc`` averages over classes with labelled pixels.
    * Frequency-weighted IoU weights each class's IoU by its share of labelled pixels.
    * ``omit_classes`` removes classes entirely: their **rows** are discarded before
      anything is computed (pixels labelled with an omitted class count like ignored
      pixels, so predicting a kept class on them is not a false positive), and the
      omitted classes are left out of every average. Their **columns** are kept: a pixel
      of a kept class predicted as an omitted class is still a false negative of the kept
      class. The CVPR 2019 search omits the background class 0; the WACV 2020 search
      omits nothing.
    * With no counted pixel (everything ignored or omitted) every metric is ``0.0``, never
      NaN, so a degenerate validation split scores like a failed trial.
    * The reward is the geometric mean ``(miou * macc * fwiou) ** (1 / 3)``.

Example:
    >>> import torch
    >>> from nas_optuna.metrics import ConfusionMatrix
    >>> cm = ConfusionMatrix(num_classes=2)
    >>> target = torch.tensor([[[0, 0, 1, 255]]])
    >>> cm.update(torch.tensor([[[0, 1, 1, 0]]]), target)
    >>> cm.matrix.tolist()
    [[1, 1], [0, 1]]
    >>> round(cm.compute()["miou"], 4)
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from nas_optuna.labels import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "ConfusionMatrix", "reward", "segmentation_metrics"]

_METRIC_KEYS = ("miou", "macc", "fwiou", "pixel_accuracy", "reward")


class ConfusionMatrix:
    """Accumulates a ``(C, C)`` confusion matrix over batches, on the batches' device.

    Counts live in one device tensor of ``C * C + 2`` bins: the ``C * C`` matrix cells,
    one bin for ignored pixels and one for pixels whose *predicted* class is out of range.
    ``update`` never synchronises with the host: counting uses ``scatter_add_`` into the
    fixed-size buffer, because ``torch.bincount`` on CUDA reads the input's min/max back
    to the host to size its output. Out-of-range predictions are therefore only detected
    in :meth:`compute`, which has to synchronise anyway.

    Args:
        num_classes: Number of classes ``C``.
        ignore_index: Label of pixels that are never counted. Labels outside
            ``[0, num_classes)`` are ignored as well.
        device: Device of the counts. ``None`` adopts the device of the first
            :meth:`update`; with a device given, inputs are moved to it.

    Example:
        >>> import torch
        >>> from nas_optuna.metrics import ConfusionMatrix
        >>> cm = ConfusionMatrix(num_classes=3)
        >>> logits = torch.zeros(1, 3, 2, 2)
        >>> logits[:, 2] = 1.0  # predicts class 2 everywhere
        >>> cm.update(logits, torch.tensor([[[2, 2], [1, 255]]]))
        >>> cm.matrix[:, 2].tolist()
        [0, 1, 2]
        >>> sorted(cm.compute())
        ['fwiou', 'macc', 'miou', 'pixel_accuracy', 'reward']
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self._device = torch.device(device) if device is not None else None
        self._counts: torch.Tensor | None = None
        if self._device is not None:
            self._counts = self._new_counts(self._device)

    @property
    def _num_cells(self) -> int:
        return self.num_classes * self.num_classes

    def _new_counts(self, device: torch.device) -> torch.Tensor:
        # Bin C*C collects ignored pixels, bin C*C+1 invalid predictions on counted pixels.
        return torch.zeros(self._num_cells + 2, dtype=torch.int64, device=device)

    @property
    def device(self) -> torch.device | None:
        """Device of the counts, ``None`` until the first update when none was given."""
        return self._counts.device if self._counts is not None else self._device

    @property
    def matrix(self) -> torch.Tensor:
        """A copy of the ``(C, C)`` ``int64`` matrix; rows = true class, cols = predicted."""
        c = self.num_classes
        if self._counts is None:
            return torch.zeros(c, c, dtype=torch.int64)
        return self._counts[: self._num_cells].reshape(c, c).clone()

    def reset(self) -> None:
        """Zeroes the counts, keeping their device."""
        if self._counts is not None:
            self._counts.zero_()

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Adds one batch to the counts.

        Args:
            prediction: Either floating-point logits ``(N, C, h, w)`` or integer class
                indices ``(N, H, W)``. Logits whose ``(h, w)`` differs from the target's
                are bilinearly upsampled (``align_corners=False``) to ``(H, W)`` before
                the argmax over classes.
            target: Integer labels ``(N, H, W)``; ``ignore_index`` and labels outside
                ``[0, C)`` are not counted.

        Raises:
            ValueError: Shapes or dtypes do not fit the conventions above.
        """
        if target.dim() != 3 or not _is_integer(target):
            raise ValueError(
                f"target must be an integer tensor (N, H, W), got {tuple(target.shape)} "
                f"of {target.dtype}"
            )
        indices = self._to_indices(prediction, target.shape)

        if self._counts is None:
            self._counts = self._new_counts(indices.device)
        device = self._counts.device
        # non_blocking: a pinned host batch then copies without stalling the host.
        labels = target.to(device=device, dtype=torch.int64, non_blocking=True).reshape(-1)
        predicted = indices.to(device=device, dtype=torch.int64, non_blocking=True).reshape(-1)

        c = self.num_classes
        counted = (labels >= 0) & (labels < c) & (labels != self.ignore_index)
        in_range = (predicted >= 0) & (predicted < c)
        cell = labels * c + predicted
        bins = torch.where(
            counted & in_range,
            cell,
            torch.where(counted, self._num_cells + 1, self._num_cells),
        )
        self._counts.scatter_add_(0, bins, torch.ones_like(bins))

    def _to_indices(self, prediction: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
        n, height, width = target_shape
        if prediction.dim() == 4 and prediction.is_floating_point():
            if prediction.shape[0] != n or prediction.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits must have shape (N={n}, C={self.num_classes}, h, w), got "
                    f"{tuple(prediction.shape)}"
                )
            logits = prediction.detach()
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(
                    logits, size=(height, width), mode="bilinear", align_corners=False
                )
            return logits.argmax(dim=1)
        if prediction.dim() == 3 and _is_integer(prediction):
            if prediction.shape != target_shape:
                raise ValueError(
                    f"class-index prediction {tuple(prediction.shape)} must match target "
                    f"{tuple(target_shape)}"
                )
            return prediction.detach()
        raise ValueError(
            "prediction must be floating-point logits (N, C, h, w) or integer class indices "
            f"(N, H, W), got {tuple(prediction.shape)} of {prediction.dtype}"
        )

    def compute(self, omit_classes: Sequence[int] = ()) -> dict[str, float]:
        """Metrics and reward of everything accumulated since the last reset.

        Args:
            omit_classes: Classes removed entirely, see :func:`segmentation_metrics`.

        Returns:
            ``miou``, ``macc``, ``fwiou``, ``pixel_accuracy`` and ``reward`` as floats.

        Raises:
            ValueError: Some counted pixel had a predicted class outside ``[0, C)``.
        """
        if self._counts is not None:
            invalid = int(self._counts[self._num_cells + 1].item())
            if invalid:
                raise ValueError(
                    f"{invalid} counted pixels had a predicted class outside "
                    f"[0, {self.num_classes})"
                )
        return segmentation_metrics(self.matrix, omit_classes)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, device={self.device})"
        )


def segmentation_metrics(
    matrix: torch.Tensor | np.ndarray, omit_classes: Sequence[int] = ()
) -> dict[str, float]:
    """Mean IoU, mean accuracy, frequency-weighted IoU, pixel accuracy and reward.

    Omitted classes lose their rows (their pixels are not counted at all) and are left
    out of every average; their columns stay, so predicting an omitted class on a pixel of
    a kept class is still an error. Classes absent from both labels and predictions (after
    omission) are dropped from the means; ``macc`` averages the recall of classes with
    labelled pixels only. With no counted pixel every value is ``0.0``.

    Args:
        matrix: Square confusion matrix, rows = true class, columns = predicted class.
        omit_classes: Class indices to remove, e.g. ``(0,)`` for the CVPR 2019 setup.

    Returns:
        A dict with ``miou``, ``macc``, ``fwiou``, ``pixel_accuracy`` and ``reward``.

    Raises:
        ValueError: ``matrix`` is not square or has negative entries, or an omitted class
            is out of range.

    Example:
        >>> import numpy as np
        >>> from nas_optuna.metrics import segmentation_metrics
        >>> m = segmentation_metrics(np.array([[3, 1], [0, 4]]))
        >>> round(m["miou"], 4), round(m["macc"], 4), m["pixel_accuracy"]
        (0.775, 0.875, 0.875)
        >>> segmentation_metrics(np.array([[3, 1], [0, 4]]), omit_classes=[0])["miou"]
        1.0
    """
    counts = _as_float_matrix(matrix)
    num_classes = counts.shape[0]
    omitted = _validate_omitted(omit_classes, num_classes)

    keep = np.ones(num_classes, dtype=bool)
    keep[omitted] = False
    # Zeroing (not deleting) the omitted rows keeps columns aligned with class ids.
    counts[~keep, :] = 0.0

    true_positives = np.diag(counts)
    labelled = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    union = labelled + predicted - true_positives
    total = labelled.sum()
    if total == 0:
        return dict.fromkeys(_METRIC_KEYS, 0.0)

    present = keep & (union > 0)
    has_labels = keep & (labelled > 0)
    iou = np.zeros(num_classes)
    iou[present] = true_positives[present] / union[present]
    recall = np.zeros(num_classes)
    recall[has_labels] = true_positives[has_labels] / labelled[has_labels]

    metrics = {
        "miou": float(iou[present].mean()),
        "macc": float(recall[has_labels].mean()),
        # Sum of counts times IoU over the pixel total, not of rounded frequencies, so a
        # perfect prediction yields exactly 1.0.
        "fwiou": float((labelled[keep] * iou[keep]).sum() / total),
        "pixel_accuracy": float(true_positives[keep].sum() / total),
    }
    metrics["reward"] = reward(metrics)
    return metrics


def reward(metrics: Mapping[str, float]) -> float:
    """The papers' reward: the geometric mean of ``miou``, ``macc`` and ``fwiou``.

    Args:
        metrics: A mapping holding at least ``miou``, ``macc`` and ``fwiou`` in ``[0, 1]``.

    Returns:
        ``(miou * macc * fwiou) ** (1 / 3)``.

    Raises:
        KeyError: A required key is missing.
        ValueError: A value is negative or NaN.

    Example:
        >>> from nas_optuna.metrics import reward
        >>> reward({"miou": 0.5, "macc": 0.5, "fwiou": 0.5})
        0.5
    """
    values = [float(metrics[key]) for key in ("miou", "macc", "fwiou")]
    if any(not value >= 0.0 for value in values):  # `not >=` also catches NaN
        raise ValueError(f"reward needs non-negative miou, macc, fwiou, got {values}")
    product = values[0] * values[1] * values[2]
    # Cube roots of exact cubes are not exact in floating point (0.125 ** (1/3) is
    # 0.49999999999999994); one Newton step on x**3 = product removes that last ulp.
    root = product ** (1.0 / 3.0)
    if root > 0.0:
        root -= (root**3 - product) / (3.0 * root**2)
    return float(root)


def _is_integer(tensor: torch.Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex())


def _as_float_matrix(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(matrix, torch.Tensor):
        array = matrix.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {array.shape}")
    if not np.all(array >= 0):  # also rejects NaN
        raise ValueError("confusion matrix must have non-negative entries")
    # A copy, so zeroing omitted rows never writes into the caller's array.
    return array.copy()


def _validate_omitted(omit_classes: Sequence[int], num_classes: int) -> list[int]:
    omitted = [int(c) for c in omit_classes]
    bad = [c for c in omitted if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"omit_classes {bad} outside [0, {num_classes})")
    return omitted
