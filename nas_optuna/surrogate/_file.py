"""Saving and loading a surrogate: numbers and JSON, never a pickle.

A surrogate file is a NumPy ``.npz`` archive read with ``allow_pickle=False``, so loading
one cannot run code. It holds the fitted model's arrays (``model/<name>``) and one
``header`` entry: UTF-8 JSON with ``format`` (:data:`FORMAT`), ``version``, the space,
the encoding, the derived features' names, the model name, the metric, the noise std,
the cross-validation scores, provenance, and the SHA-256 of every array and of the
header itself. :func:`load_surrogate` refuses, with one line, a file that is not an
``.npz``, has no nas-optuna header, has another format version, or whose header or
arrays do not match their recorded digests (changed after saving). The digests catch
accidents and edits, not forgery: anyone can recompute them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from nas_optuna._files import atomic_path
from nas_optuna.exceptions import ConfigError
from nas_optuna.surrogate._encoding import ParamEncoding
from nas_optuna.surrogate._fit import CandidateScore, Surrogate
from nas_optuna.surrogate._models import MODELS

__all__ = ["FORMAT", "load_surrogate", "save_surrogate"]

FORMAT = "nas-optuna-surrogate"
VERSION = 1


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(array.dtype.str.encode() + str(array.shape).encode()
                          + array.tobytes()).hexdigest()


def _header_digest(header: dict[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != "header_digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def save_surrogate(surrogate: Surrogate, path: str | os.PathLike[str]) -> Path:
    """Writes ``surrogate`` to ``path`` (atomically: a reader never sees half a file).

    Example:
        >>> save_surrogate(surrogate, "template.surrogate.npz")  # doctest: +SKIP
    """
    path = Path(path)
    arrays = {f"model/{k}": np.asarray(v) for k, v in surrogate.arrays.items()}
    header = {
        "format": FORMAT, "version": VERSION, "space": surrogate.space,
        "encoding": surrogate.encoding.to_dict(), "model": surrogate.model,
        "metric": surrogate.metric, "noise_std": surrogate.noise_std,
        "scores": [dataclasses.asdict(s) for s in surrogate.scores], "info": surrogate.info,
        "derived": list(surrogate.derived),
        "digests": {k: _digest(v) for k, v in arrays.items()},
    }
    header["header_digest"] = _header_digest(header)
    encoded = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, open(temporary, "wb") as out:
        np.savez_compressed(out, header=encoded, **arrays)
    return path


def load_surrogate(path: str | os.PathLike[str]) -> Surrogate:
    """Reads a file written by :func:`save_surrogate`.

    Raises:
        ConfigError: The file is missing, not a nas-optuna surrogate, of another format
            version, or changed since it was saved.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"surrogate file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise ConfigError(f"{str(path)!r} is not a nas-optuna surrogate file "
                          f"(not a NumPy archive of plain arrays: "
                          f"{type(error).__name__})") from None
    header = _header(path, contents.pop("header", None))
    if header.get("header_digest") != _header_digest(header):
        raise ConfigError(f"surrogate file {str(path)!r} was changed after it was saved "
                          "(its header does not match its digest)")
    digests = header.get("digests", {})
    if set(digests) != set(contents):
        raise ConfigError(f"surrogate file {str(path)!r} was changed after it was saved "
                          "(its arrays differ from those recorded)")
    for name, array in contents.items():
        if _digest(array) != digests[name]:
            raise ConfigError(f"surrogate file {str(path)!r} was changed after it was saved "
                              f"(array {name!r} does not match its digest)")
    try:
        return Surrogate(
            space=dict(header["space"]),
            encoding=ParamEncoding.from_dict(header["encoding"]),
            model=_model_name(path, header["model"]),
            arrays={name.removeprefix("model/"): array for name, array in contents.items()},
            noise_std=None if header["noise_std"] is None else float(header["noise_std"]),
            metric=dict(header["metric"]),
            scores=[CandidateScore(**s) for s in header["scores"]],
            info=dict(header.get("info", {})),
            derived=tuple(str(n) for n in header.get("derived", [])),
            digest=str(header["header_digest"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"surrogate file {str(path)!r} has a malformed header: "
                          f"{error!r}") from None


def _header(path: Path, raw: Any) -> dict[str, Any]:
    if raw is None or raw.dtype != np.uint8:
        raise ConfigError(f"{str(path)!r} is not a nas-optuna surrogate file (no header)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{str(path)!r} is not a nas-optuna surrogate file "
                          "(unreadable header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ConfigError(f"{str(path)!r} is not a nas-optuna surrogate file")
    if header.get("version") != VERSION:
        raise ConfigError(f"surrogate file {str(path)!r} has format version "
                          f"{header.get('version')!r}; this nas-optuna reads {VERSION}")
    return header


def _model_name(path: Path, name: Any) -> str:
    if name not in MODELS:
        raise ConfigError(f"surrogate file {str(path)!r} names an unknown model {name!r}")
    return str(name)
