"""Trial artifacts: architecture diagram, mask preview, weights and the trial note.

Each finished trial stores files through :mod:`optuna.artifacts` in a filesystem artifact
store (``[artifacts]``, see :class:`~nas_optuna.config.ArtifactsConfig`); optuna-dashboard
shows them beside the trial (``nas-optuna dashboard``) and
``optuna.artifacts.get_all_artifact_meta(trial)`` lists them:

* ``trial-N-architecture.svg`` (``image/svg+xml``, COMPLETE and PRUNED trials): the
  architecture drawn by :func:`nas_optuna.diagram.render_svg` from ``space.graph(arch)``;
* ``trial-N-masks.png`` (``image/png``, COMPLETE trials that trained): the first ``masks``
  meta-val images, one per row, with columns image / true mask / predicted mask, drawn
  with :func:`class_palette` (ignored pixels black, Cityscapes' void colour), predicted
  by the network that was evaluated (the Polyak-averaged copy);
* ``trial-N-weights.pt`` (off by default): that network's ``state_dict`` (``torch.save``),
  loadable into ``space.build(space.from_params(trial.params), num_classes)``.

The trial's note (optuna-dashboard's Markdown note, :func:`optuna_dashboard.save_note`)
holds the readable genotype and the key numbers.

Artifacts are extras: one that cannot be made or written (disk full, permission denied,
a drawing bug) never fails the trial. The trial gets the user attr ``artifact_error`` with
a one-line reason, a warning is logged, and nothing stored is lost. An artifact's
metadata is written to the storage only once its file is in the store, so a failed write
leaves no entry pointing at a missing file.

Example:
    >>> png = mask_preview_png(images, truth, prediction, num_classes=6)  # doctest: +SKIP
    >>> default_artifact_dir("sqlite:///runs/quickstart.db")  # doctest: +SKIP
    PosixPath('/home/me/runs/quickstart.db-artifacts')
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlsplit

import numpy as np
import optuna
import optuna.artifacts
from optuna.artifacts.exceptions import ArtifactNotFound
from PIL import Image

from nas_optuna.labels import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

    from nas_optuna.config import ArtifactsConfig, StudyConfig
    from nas_optuna.training import SearchData, TrainResult
    from search_spaces import SearchSpace

__all__ = [
    "ARTIFACT_DIR_ATTR",
    "ArtifactFile",
    "MultiDirectoryArtifactStore",
    "artifact_dirs_of",
    "class_palette",
    "default_artifact_dir",
    "diagram_svg",
    "mask_preview_png",
    "open_artifact_store",
    "preview_cell_size",
    "record_artifact_dir",
    "resolve_artifact_dir",
    "trial_note",
    "upload_trial_artifacts",
]

logger = logging.getLogger(__name__)

#: Study user attr naming the folder of the study's artifact store.
ARTIFACT_DIR_ATTR = "artifact_dir"
#: Colour of ignored pixels (label 255) in the mask preview: black, Cityscapes' void.
IGNORE_COLOUR = (0, 0, 0)
#: Columns of the mask preview, left to right.
PREVIEW_COLUMNS = ("image", "truth", "prediction")

# Cityscapes' colours for its 19 train ids; later classes take the PASCAL VOC colour map.
_CITYSCAPES = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
_MEMORY_STORAGES = ("sqlite://", "sqlite:///:memory:")


# --- where the artifacts live --------------------------------------------------------
def default_artifact_dir(storage: str) -> Path:
    """The default artifact folder of a storage URL.

    Next to a SQLite or journal file (``sqlite:///runs/x.db`` ->
    ``<cwd>/runs/x.db-artifacts``, absolute); for any other storage
    ``~/.cache/nas-optuna/artifacts/<name>``, where the name is the URL without
    credentials, made file-name safe, plus a short hash.
    """
    for prefix in ("sqlite:///", "journal:///"):
        if storage.startswith(prefix) and storage.split("?")[0] not in _MEMORY_STORAGES:
            database = Path(storage[len(prefix):].split("?")[0]).expanduser()
            if prefix == "sqlite:///":  # file: URIs (e.g. read-only databases) included
                from nas_optuna.storage import sqlite_path

                database = sqlite_path(storage) or Path()
            if database.name:
                return database.resolve().with_name(database.name + "-artifacts")
    parts = urlsplit(storage)
    host = parts.hostname or ""
    port = f"_{parts.port}" if _port(parts) else ""
    bare = f"{parts.scheme}://{host}{port}{parts.path}"  # no user, no password, no query
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.scheme}_{host}{port}{parts.path}")
    name = name.strip("._-")[:80] or "storage"
    digest = hashlib.sha256(bare.encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "nas-optuna" / "artifacts" / f"{name}-{digest}"


def _port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def resolve_artifact_dir(config: StudyConfig) -> Path | None:
    """The config's artifact folder (``[artifacts] dir`` or the default), None when off."""
    settings = config.artifacts
    if not settings.enabled:
        return None
    if settings.dir is not None:
        return Path(settings.dir).expanduser().resolve()
    return default_artifact_dir(config.study.storage)


def record_artifact_dir(study: optuna.Study, config: StudyConfig) -> Path | None:
    """Resolves the artifact folder and records it as the study's ``artifact_dir`` attr.

    Returns:
        The folder, or None when ``[artifacts] enabled = false`` (the attr is untouched).
    """
    directory = resolve_artifact_dir(config)
    if directory is not None and study.user_attrs.get(ARTIFACT_DIR_ATTR) != str(directory):
        study.set_user_attr(ARTIFACT_DIR_ATTR, str(directory))
    return directory


class MultiDirectoryArtifactStore:
    """An artifact store over several folders: reads from the first holding an artifact.

    Artifact ids are UUIDs, so folders never disagree. Used by ``nas-optuna dashboard``
    when the studies of one storage keep their artifacts in different folders; writes
    (uploads from the dashboard) go to the first folder.
    """

    def __init__(self, directories: Sequence[str | Path]) -> None:
        if not directories:
            raise ValueError("at least one folder is needed")
        self.directories = [Path(d) for d in directories]
        self._stores = [optuna.artifacts.FileSystemArtifactStore(d) for d in self.directories]

    def open_reader(self, artifact_id: str) -> BinaryIO:
        for store in self._stores:
            try:
                return store.open_reader(artifact_id)
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} not found")

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self.directories[0].mkdir(parents=True, exist_ok=True)
        self._stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        for store in self._stores:
            try:
                store.remove(artifact_id)
                return
            except ArtifactNotFound:
                continue
        raise ArtifactNotFound(f"artifact {artifact_id} not found")


def open_artifact_store(directories: Sequence[str | Path]) -> Any:
    """A :class:`~optuna.artifacts.FileSystemArtifactStore` on one folder, else a
    :class:`MultiDirectoryArtifactStore` over several."""
    if len(directories) == 1:
        return optuna.artifacts.FileSystemArtifactStore(Path(directories[0]))
    return MultiDirectoryArtifactStore(directories)


# --- the pictures --------------------------------------------------------------------
def diagram_svg(space: SearchSpace, arch: Any) -> str:
    """The architecture diagram (SVG text) of ``arch``."""
    from nas_optuna.diagram import render_svg

    return render_svg(space.graph(arch))


def class_palette(num_classes: int) -> np.ndarray:
    """A fixed ``(num_classes, 3)`` uint8 palette: Cityscapes' colours, then PASCAL VOC's.

    The same class has the same colour in every trial and study; no class is drawn in
    :data:`IGNORE_COLOUR`.
    """
    colours = list(_CITYSCAPES[:num_classes])
    index = 1
    used = set(colours) | {IGNORE_COLOUR}
    while len(colours) < num_classes:
        colour = _voc_colour(index)
        index += 1
        if colour not in used:
            colours.append(colour)
            used.add(colour)
    return np.asarray(colours, dtype=np.uint8).reshape(num_classes, 3)


def _voc_colour(index: int) -> tuple[int, int, int]:
    red = green = blue = 0
    for shift in range(7, -1, -1):
        red |= ((index >> 0) & 1) << shift
        green |= ((index >> 1) & 1) << shift
        blue |= ((index >> 2) & 1) << shift
        index >>= 3
    return red, green, blue


def preview_cell_size(height: int, width: int) -> tuple[int, int]:
    """The size ``(h, w)`` of one cell of the mask preview for ``height x width`` images.

    Small images are enlarged by an integer factor until their longer side reaches 128
    pixels; large ones are shrunk to a longer side of 512. The preview is
    ``rows * h`` by ``3 * w`` pixels.
    """
    longer = max(height, width)
    if longer < 128:
        factor: float = math.ceil(128 / longer)
    elif longer > 512:
        factor = 512 / longer
    else:
        factor = 1
    return max(1, round(height * factor)), max(1, round(width * factor))


def mask_preview_png(
    images: Any,
    truth: Any,
    prediction: Any,
    *,
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> bytes:
    """A PNG grid of predicted vs true masks: rows = images, columns = image/truth/prediction.

    Args:
        images: ``(N, 3, H, W)`` normalised images (tensor or array).
        truth: ``(N, H, W)`` true class indices; ``ignore_index`` pixels are drawn black.
        prediction: ``(N, H, W)`` predicted class indices.
        num_classes: Classes of the palette.
        ignore_index: The label of unlabelled pixels.
        mean, std: Normalisation of ``images`` (default: ImageNet's, as the search data).

    Returns:
        The PNG bytes, ``N * h`` by ``3 * w`` pixels with ``(h, w)`` from
        :func:`preview_cell_size`.
    """
    if mean is None or std is None:
        from nas_optuna.data import IMAGENET_MEAN, IMAGENET_STD

        mean, std = IMAGENET_MEAN, IMAGENET_STD
    images = _array(images).astype(np.float32)
    truth, prediction = _array(truth).astype(np.int64), _array(prediction).astype(np.int64)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {images.shape}")
    count, _, height, width = images.shape
    if truth.shape != (count, height, width) or prediction.shape != truth.shape:
        raise ValueError(f"masks must be {(count, height, width)}, got {truth.shape} and "
                         f"{prediction.shape}")
    pixels = images * np.asarray(std, np.float32)[:, None, None]
    pixels = pixels + np.asarray(mean, np.float32)[:, None, None]
    pixels = (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    cell_h, cell_w = preview_cell_size(height, width)
    palette = class_palette(num_classes)
    sheet = Image.new("RGB", (len(PREVIEW_COLUMNS) * cell_w, count * cell_h), IGNORE_COLOUR)
    for row in range(count):
        cells = (
            Image.fromarray(pixels[row]).resize((cell_w, cell_h), Image.Resampling.BILINEAR),
            _mask_image(truth[row], palette, ignore_index).resize(
                (cell_w, cell_h), Image.Resampling.NEAREST),
            _mask_image(prediction[row], palette, ignore_index).resize(
                (cell_w, cell_h), Image.Resampling.NEAREST),
        )
        for column, cell in enumerate(cells):
            sheet.paste(cell, (column * cell_w, row * cell_h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def _mask_image(mask: np.ndarray, palette: np.ndarray, ignore_index: int) -> Image.Image:
    """Class colours; ignored pixels (and labels outside the classes) black."""
    valid = (mask != ignore_index) & (mask >= 0) & (mask < len(palette))
    colours = np.empty((*mask.shape, 3), dtype=np.uint8)
    colours[:] = IGNORE_COLOUR
    colours[valid] = palette[mask[valid]]
    return Image.fromarray(colours)


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else (
            value.detach().cpu().numpy())
    return np.asarray(value)


# --- the note --------------------------------------------------------------------------
#: (label, user attr, format) of the note's table.
_NOTE_NUMBERS = (
    ("reward after stage 1", "reward_stage1", "{:.4f}"),
    ("reward after stage 2", "reward_stage2", "{:.4f}"),
    ("mIoU", "miou", "{:.4f}"),
    ("mean accuracy", "macc", "{:.4f}"),
    ("frequency-weighted IoU", "fwiou", "{:.4f}"),
    ("parameters", "params_total", "{:,}"),
    ("parameters after the stem", "params_generated", "{:,}"),
    ("MACs", "macs", "{:,}"),
    ("latency (ms)", "latency_ms", "{:.3f}"),
    ("peak memory (MB)", "peak_memory_mb", "{:.2f}"),
    ("output stride", "output_stride", "{}"),
    ("cost penalty", "cost_penalty", "{:.4f}"),
    ("stem weights", "stem_weights", "{}"),
)


def trial_note(number: int, attrs: Mapping[str, Any], *, outcome: str,
               space: str | None = None) -> str:
    """The trial's Markdown note: outcome, readable genotype and key numbers."""
    title = f"## Trial {number}" + (f" — {space}" if space else "")
    lines = [title, "", f"**Outcome:** {outcome}", ""]
    if attrs.get("rejected"):
        lines += [f"**Rejected before training:** {attrs['rejected']}", ""]
    genotype = attrs.get("genotype")
    if genotype:
        lines += ["**Genotype**", "", "```", str(genotype), "```", ""]
    rows = []
    for label, key, form in _NOTE_NUMBERS:
        value = attrs.get(key)
        if value is None:
            continue
        try:
            shown = form.format(value)
        except (TypeError, ValueError):
            shown = str(value)
        rows.append(f"| {label} | {shown} |")
    if rows:
        lines += ["| measure | value |", "|---|---:|", *rows, ""]
    return "\n".join(lines)


# --- uploading -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArtifactFile:
    """One artifact to store: its file name, MIME type and a function making its bytes.

    The bytes are made inside the upload, so a failure making them (a drawing error) is
    isolated like a failure writing them.
    """

    filename: str
    mimetype: str
    make: Callable[[], bytes]


class _DeferredMetadata:
    """Holds ``upload_artifact``'s metadata writes until the file is in the store.

    Whatever order ``optuna.artifacts.upload_artifact`` writes the file and records its
    metadata in (Optuna 5.0 records first, 5.1 writes first), a failed write must leave no
    entry pointing at a missing file, which optuna-dashboard would then fail to serve.
    Passed as its ``storage``, this buffers trial and study system attrs and forwards
    everything else to the real storage; :meth:`commit` writes them once the upload
    returned.
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self.pending: list[tuple[str, int, str, Any]] = []

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.pending.append(("trial", trial_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.pending.append(("study", study_id, key, value))

    def __getattr__(self, name: str) -> Any:  # reads and anything else: the real storage
        return getattr(self._storage, name)

    def commit(self) -> None:
        for kind, owner, key, value in self.pending:
            if kind == "trial":
                self._storage.set_trial_system_attr(owner, key, value)
            else:
                self._storage.set_study_system_attr(owner, key, value)


class _CleaningStore:
    """An artifact store wrapper whose failed ``write`` leaves no file behind.

    The cleanup keys on the id ``write`` is called with, so it does not depend on how or
    in which order ``upload_artifact`` records the artifact: only the public
    :class:`~optuna.artifacts._protocol.ArtifactStore` protocol (``write``, ``remove``,
    ``open_reader``) is used.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self.written: list[str] = []

    def open_reader(self, artifact_id: str) -> BinaryIO:
        return self._store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        try:
            self._store.write(artifact_id, content_body)
        except BaseException:
            self.remove_quietly(artifact_id)
            raise
        self.written.append(artifact_id)

    def remove(self, artifact_id: str) -> None:
        self._store.remove(artifact_id)

    def remove_quietly(self, artifact_id: str) -> None:
        """Removes an artifact's file if there is one; never raises."""
        try:
            self._store.remove(artifact_id)
        except Exception:  # noqa: BLE001 - best effort: not there, or the disk is failing
            pass


def _upload_one(trial: optuna.Trial, store: Any, directory: Path, item: ArtifactFile) -> str:
    content = item.make()
    directory.mkdir(parents=True, exist_ok=True)
    metadata = _DeferredMetadata(trial.storage)
    cleaning = _CleaningStore(store)
    with tempfile.TemporaryDirectory(prefix="nas-optuna-artifact-") as staging:
        path = Path(staging) / item.filename
        path.write_bytes(content)
        try:
            artifact_id = optuna.artifacts.upload_artifact(
                artifact_store=cleaning, file_path=str(path), study_or_trial=trial,
                storage=metadata, mimetype=item.mimetype,
            )
            metadata.commit()
        except BaseException:
            for written in cleaning.written:  # written, but not recorded: nothing points at it
                cleaning.remove_quietly(written)
            raise
    return artifact_id


def upload_trial_artifacts(
    trial: optuna.Trial,
    directory: str | Path,
    settings: ArtifactsConfig,
    *,
    space: SearchSpace,
    arch: Any,
    outcome: str,
    data: SearchData | None = None,
    network: torch.nn.Module | None = None,
    result: TrainResult | None = None,
    device: torch.device | None = None,
) -> list[str]:
    """Stores a finishing trial's artifacts and note; never raises.

    Called by the objective at the end of a trial (before it returns or raises
    ``TrialPruned``: a finished trial's attrs can no longer change).

    Args:
        trial: The running trial.
        directory: The artifact store's folder (created when missing).
        settings: ``[artifacts]``.
        space: The search space (draws the diagram).
        arch: The trial's architecture.
        outcome: ``complete``, ``pruned after stage N`` or ``rejected`` (for the note);
            only a trained, complete trial (``data``, ``network`` and ``result`` given)
            gets the mask preview and the weights.
        data: The search data (meta-val images of the preview).
        network: The trained network (weights after the last training step).
        result: What training returned; its ``evaluated`` copy predicts the masks.
        device: Where the prediction runs.

    Returns:
        The ids of the stored artifacts. Failures are recorded in the trial's
        ``artifact_error`` user attr and logged as a warning.
    """
    directory = Path(directory)
    files: list[ArtifactFile] = []
    number = trial.number
    if settings.diagram:
        files.append(ArtifactFile(f"trial-{number}-architecture.svg", "image/svg+xml",
                                  lambda: diagram_svg(space, arch).encode("utf-8")))
    trained = data is not None and network is not None and result is not None
    if trained and settings.masks > 0:
        files.append(ArtifactFile(
            f"trial-{number}-masks.png", "image/png",
            lambda: _preview(data, network, result, settings.masks, device)))
    if trained and settings.weights:
        files.append(ArtifactFile(f"trial-{number}-weights.pt", "application/octet-stream",
                                  lambda: _weights(network, result)))
    errors: list[str] = []
    stored: list[str] = []
    store = open_artifact_store([directory])
    for item in files:
        try:
            stored.append(_upload_one(trial, store, directory, item))
        except Exception as error:  # noqa: BLE001 - an artifact never fails the trial
            errors.append(f"{item.filename}: {_reason(error)}")
    try:
        from optuna_dashboard import save_note

        save_note(trial, trial_note(number, trial.user_attrs, outcome=outcome,
                                    space=f"{space.name} ({space.profile})"))
    except Exception as error:  # noqa: BLE001
        errors.append(f"note: {_reason(error)}")
    if errors:
        message = "; ".join(errors)[:500]
        logger.warning("trial %d: artifacts not stored in %s: %s", number, directory, message)
        try:
            trial.set_user_attr("artifact_error", message)
        except Exception:  # noqa: BLE001 - the storage itself is failing; the trial decides
            logger.warning("trial %d: could not record artifact_error", number)
    return stored


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def _preview(data: SearchData, network: torch.nn.Module, result: TrainResult, count: int,
             device: torch.device | None) -> bytes:
    import torch

    from nas_optuna.networks import module_device
    from nas_optuna.training.trainer import predict

    indices = list(range(min(count, len(data.val_labels))))
    if not indices:
        raise ValueError("the meta-val split has no images")
    if result.evaluated is not None and result.last_stage is not None:
        model, stage = result.evaluated, result.last_stage
    else:  # a trainer without an averaged copy: the network itself
        model, stage = network, 2
    if device is None:
        device = module_device(network)
    prediction = predict(model, data, indices, stage=stage, device=device)
    index = torch.as_tensor(indices)
    images = data.val_images[index.to(data.val_images.device)]
    truth = data.val_labels[index.to(data.val_labels.device)]
    return mask_preview_png(images, truth, prediction, num_classes=data.num_classes)


def _weights(network: torch.nn.Module, result: TrainResult) -> bytes:
    import torch

    from nas_optuna.training.trainer import evaluated_state_dict

    buffer = io.BytesIO()
    torch.save(evaluated_state_dict(network, result), buffer)
    return buffer.getvalue()


def artifact_dirs_of(studies: Iterable[Any]) -> list[Path]:
    """The distinct ``artifact_dir`` attrs of some studies (or study summaries), in order."""
    seen: list[Path] = []
    for study in studies:
        value = getattr(study, "user_attrs", {}).get(ARTIFACT_DIR_ATTR)
        if isinstance(value, str) and value and Path(value) not in seen:
            seen.append(Path(value))
    return seen
