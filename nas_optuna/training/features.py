"""Search data: the meta-train / meta-val split and the cached stem features.

The papers' main speed trick: the stem is frozen during stage 1, so its outputs are
computed once per dataset and reused by every trial. :func:`prepare_search_data` builds
(or loads) that cache: the initialised stem weights, the stem features of every
meta-train image (and, with ``flip_views``, of its horizontal mirror) and of every
meta-val image, plus the labels.

Choices the papers leave open:

* Stage 1 sees fixed, un-augmented crops (plus mirrored copies): cached features cannot be
  re-augmented. Stage 2 trains end to end with live augmentation.
* Features are stored as float16 (half the memory; stage 1 casts batches back to float32).
* The cache key hashes the dataset description, the split, the crop, the stem and how it
  was initialised; the file is written to a temporary name and renamed, so a reader never
  sees half a file. Workers on one machine that need the same cache at once take a file
  lock (``flock`` on ``<cache>.lock``): one builds it, the others wait and load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_optuna._files import atomic_path
from nas_optuna.data import SegmentationDataset, SegmentationSource, build_transforms, meta_split
from nas_optuna.exceptions import DatasetError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the atomic rename remains
    fcntl = None  # type: ignore[assignment]

__all__ = ["SearchData", "prepare_search_data", "cache_key"]

_CACHE_VERSION = 2


@dataclasses.dataclass
class SearchData:
    """Everything a trial trains and evaluates on.

    Attributes:
        num_classes: Number of classes (label 255 is ignored).
        stem_state: Initialised stem weights (``state_dict``), copied into every network.
        stem_weights: ``imagenet``, ``warmup`` or ``random``: how the stem was initialised.
        train_features: Stem outputs of the meta-train images (float16), one tensor per output.
        train_labels: Meta-train labels (uint8, ``N x H x W``) matching ``train_features``.
        val_features: Stem outputs of the meta-val images.
        val_images: Normalised meta-val images (float16) for stage-2 evaluation.
        val_labels: Meta-val labels.
        train_dataset: Augmented meta-train view for stage 2.
        key: The cache key.
        train_teacher_logits: A distillation teacher's logits for ``train_labels`` (float16,
            at a quarter of the image size), or None without a teacher.
    """

    num_classes: int
    stem_state: dict[str, torch.Tensor]
    stem_weights: str
    train_features: list[torch.Tensor]
    train_labels: torch.Tensor
    val_features: list[torch.Tensor]
    val_images: torch.Tensor
    val_labels: torch.Tensor
    train_dataset: SegmentationDataset
    key: str
    train_teacher_logits: torch.Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.val_images.shape[-2:])  # type: ignore[return-value]

    def to(self, device: torch.device) -> SearchData:
        """Moves the cached tensors to ``device`` (where they fit, the search runs from there)."""
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return dataclasses.replace(
            self,
            train_features=[move(f) for f in self.train_features],
            train_labels=move(self.train_labels),
            val_features=[move(f) for f in self.val_features],
            train_teacher_logits=(
                None if self.train_teacher_logits is None else move(self.train_teacher_logits)
            ),
            val_images=move(self.val_images),
            val_labels=move(self.val_labels),
        )


def cache_key(
    source: SegmentationSource,
    *,
    train_indices: Sequence[int],
    val_indices: Sequence[int],
    crop_size: tuple[int, int] | None,
    stem_id: str,
    stem_weights: str,
    warmup_epochs: int,
    flip_views: bool,
    seed: int = 0,
    teacher_id: str | None = None,
) -> str:
    """A stable hash of everything the cached stem features depend on."""
    payload = {
        "version": _CACHE_VERSION,
        "dataset": source.describe(),
        "train": list(train_indices),
        "val": list(val_indices),
        "crop": list(crop_size) if crop_size else None,
        "stem": stem_id,
        "stem_weights": stem_weights,
        "warmup_epochs": warmup_epochs if stem_weights in ("warmup", "auto") else 0,
        "flip": flip_views,
        "seed": seed,
        "teacher": teacher_id,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def prepare_search_data(
    source: SegmentationSource,
    *,
    build_stem: Callable[[], nn.Module],
    stem_id: str,
    initialise_stem: Callable[[nn.Module, SegmentationDataset], str],
    stem_weights: str,
    warmup_epochs: int,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    crop_size: tuple[int, int] | None = None,
    scale: tuple[float, float] = (0.75, 1.25),
    flip_views: bool = True,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    teacher: nn.Module | None = None,
    teacher_id: str | None = None,
) -> SearchData:
    """Splits ``source``, initialises the stem and computes (or loads) its features.

    Args:
        source: The search dataset.
        build_stem: Builds a randomly initialised stem.
        stem_id: Identifies the stem architecture in the cache key.
        initialise_stem: ``(stem, meta_train) -> how`` loads or trains stem weights and
            returns ``imagenet``, ``warmup`` or ``random``.
        stem_weights: Requested initialisation (part of the cache key).
        warmup_epochs: Warm-up epochs (part of the cache key).
        val_fraction: Fraction of the images held out as meta-val (papers: 10%).
        split_seed: Seed of the split.
        crop_size: Fixed (height, width) of cached and evaluated images; None keeps the
            images' own size (they must all have one size then).
        scale: Random-scale range of the stage-2 augmentation.
        flip_views: Also cache mirrored meta-train features.
        batch_size: Batch size of the feature computation.
        cache_dir: Where cache files live; None disables the disk cache.
        device: Where the stem runs while computing features.
        seed: Seed of the stem's initialisation (before ImageNet weights or the warm-up).
        teacher: A trained network (image -> logits) whose outputs on the stage-1 images are
            cached for knowledge distillation; ``teacher_id`` names it in the cache key.

    Raises:
        DatasetError: The dataset is empty, too small to split, or an image is invalid.
    """
    if len(source) == 0:
        raise DatasetError("the dataset has no images")
    train_indices, val_indices = meta_split(len(source), val_fraction, split_seed)
    if len(train_indices) < 2:  # batch norm cannot train on one image: every trial would fail
        raise DatasetError(f"too few images: {len(source)} images with val_fraction="
                           f"{val_fraction} leave {len(train_indices)} for meta-train, "
                           f"which needs at least 2")
    key = cache_key(
        source,
        train_indices=train_indices,
        val_indices=val_indices,
        crop_size=crop_size,
        stem_id=stem_id,
        stem_weights=stem_weights,
        warmup_epochs=warmup_epochs,
        flip_views=flip_views,
        seed=seed,
        teacher_id=teacher_id if teacher is not None else None,
    )
    fixed = build_transforms(train=False, crop_size=crop_size)
    train_fixed = SegmentationDataset(source, train_indices, fixed)
    val_fixed = SegmentationDataset(source, val_indices, fixed)
    # Random scaling changes the size; stage-2 batches are cropped (or padded with the
    # ignore label) back to the crop size, by default the images' own size.
    train_crop = crop_size or tuple(source.load(train_indices[0])[0].shape[:2])
    augmented = SegmentationDataset(
        source, train_indices, build_transforms(train=True, crop_size=train_crop, scale=scale)
    )

    path = Path(cache_dir) / f"stem-features-{key}.pt" if cache_dir is not None else None
    cached = _read_cache(path)
    if cached is None:
        # Workers on one machine building the same cache at once: one builds it, the
        # others wait for the lock and then read what it wrote.
        with _build_lock(path):
            cached = _read_cache(path)
            if cached is None:
                # Reading every image here also validates the whole dataset before any trial.
                train_images, train_labels = _stack(train_fixed, "meta-train")
                val_images, val_labels = _stack(val_fixed, "meta-val")
                # Seeded without disturbing the caller's RNG.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    stem = build_stem().to(device)
                how = initialise_stem(stem, augmented)
                stem.eval()
                train_features = _features(stem, train_images, batch_size, device)
                if flip_views:
                    flipped = _features(stem, train_images.flip(-1), batch_size, device)
                    train_features = [torch.cat(pair) for pair in zip(train_features, flipped)]
                    train_labels = torch.cat([train_labels, train_labels.flip(-1)])
                teacher_logits = None
                if teacher is not None:
                    teacher_logits = _teacher_logits(teacher, train_images, batch_size, device)
                    if flip_views:
                        flipped = _teacher_logits(teacher, train_images.flip(-1), batch_size,
                                                  device)
                        teacher_logits = torch.cat([teacher_logits, flipped])
                cached = {
                    "version": _CACHE_VERSION,
                    "stem_state": {k: v.detach().cpu() for k, v in stem.state_dict().items()},
                    "stem_weights": how,
                    "train_features": train_features,
                    "train_labels": train_labels,
                    "val_features": _features(stem, val_images, batch_size, device),
                    "val_images": val_images.half(),
                    "val_labels": val_labels,
                    "train_teacher_logits": teacher_logits,
                }
                _write_cache(path, cached)
    return SearchData(
        num_classes=source.num_classes,
        stem_state=cached["stem_state"],
        stem_weights=cached["stem_weights"],
        train_features=cached["train_features"],
        train_labels=cached["train_labels"],
        val_features=cached["val_features"],
        val_images=cached["val_images"],
        val_labels=cached["val_labels"],
        train_dataset=augmented,
        key=key,
        train_teacher_logits=cached["train_teacher_logits"],
    )


def _stack(dataset: SegmentationDataset, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for index in range(len(dataset)):
        image, label = dataset[index]
        images.append(image)
        labels.append(label)
    shapes = {tuple(i.shape[-2:]) for i in images}
    if len(shapes) > 1:
        raise DatasetError(
            f"{part} images have different sizes {sorted(shapes)[:3]}; "
            "set [data] crop_size to search on fixed crops"
        )
    return torch.stack(images), torch.stack(labels).to(torch.uint8)


@torch.no_grad()
def _features(
    stem: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device | str
) -> list[torch.Tensor]:
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device).float()
        chunks.append([f.half().cpu() for f in stem(batch)])
    return [torch.cat(parts) for parts in zip(*chunks)]


@torch.no_grad()
def _teacher_logits(
    teacher: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device | str
) -> torch.Tensor:
    """The teacher's logits at a quarter of the image size (float16, on the CPU).

    A quarter keeps the cache small (the papers' students predict at 1/4 to 1/32) while
    staying finer than any student, whose loss resizes these to its own output.
    """
    teacher.eval()
    size = tuple(-(-s // 4) for s in images.shape[-2:])
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = teacher(images[start : start + batch_size].to(device).float()).float()
        chunks.append(
            F.interpolate(logits, size=size, mode="bilinear", align_corners=False).half().cpu()
        )
    return torch.cat(chunks)


def _read_cache(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
        return None
    return data if data.get("version") == _CACHE_VERSION else None


@contextlib.contextmanager
def _build_lock(path: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``<cache>.lock`` (released on exit, also if the holder dies).

    Also removes temporary files a killed builder left behind: while the lock is held,
    nobody else writes one.
    """
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            for stale in path.parent.glob(f"{path.name}*.tmp"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_cache(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # The prefix is what the builder's lock cleans up after a killed writer (above).
    with atomic_path(path, prefix=path.name) as temporary:
        torch.save(data, temporary)
