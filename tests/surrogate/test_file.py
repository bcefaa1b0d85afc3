"""Surrogate files: numbers and JSON only; anything else is refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas_optuna.exceptions import ConfigError
from nas_optuna.surrogate import load_surrogate, save_surrogate
from tests.surrogate.conftest import make_known_study


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _header(arrays: dict[str, np.ndarray]) -> dict:
    return json.loads(arrays["header"].tobytes().decode())


def _with_header(header: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def test_a_saved_surrogate_loads_and_predicts_the_same(known_surrogate, tmp_path) -> None:
    path = save_surrogate(known_surrogate, tmp_path / "s.npz")
    loaded = load_surrogate(path)
    params = [t.params for t in make_known_study(20, seed=3).trials]
    np.testing.assert_array_equal(loaded.predict(params), known_surrogate.predict(params))
    assert (loaded.model, loaded.space, loaded.noise_std, loaded.metric, loaded.scores,
            loaded.encoding) == (known_surrogate.model, known_surrogate.space,
                                 known_surrogate.noise_std, known_surrogate.metric,
                                 known_surrogate.scores, known_surrogate.encoding)
    assert not list(tmp_path.glob("*.tmp*")) and sorted(p.name for p in tmp_path.iterdir()) \
        == ["s.npz"]


def _tamper_array(arrays: dict) -> dict:
    name = next(k for k in arrays if k.startswith("model/") and arrays[k].dtype.kind == "f")
    arrays[name] = arrays[name] + 1.0
    return arrays


def _tamper_header(arrays: dict) -> dict:
    header = _header(arrays)
    header["noise_std"] = 0.5
    arrays["header"] = _with_header(header)
    return arrays


def _other_version(arrays: dict) -> dict:
    header = _header(arrays)
    header["version"] = 99
    arrays["header"] = _with_header(header)
    return arrays


def _foreign(arrays: dict) -> dict:
    return {"weights": np.ones(3)}


def _pickled(arrays: dict) -> dict:
    arrays["model/extra"] = np.array([{"code": "run me"}], dtype=object)
    return arrays


@pytest.mark.parametrize(("change", "message"), [
    (_tamper_array, "was changed after it was saved .array 'model/"),
    (_tamper_header, "was changed after it was saved .its header"),
    (_other_version, "has format version 99; this nas-optuna reads 1"),
    (_foreign, "is not a nas-optuna surrogate file .no header"),
    (_pickled, "is not a nas-optuna surrogate file .not a NumPy archive"),
])
def test_changed_or_foreign_files_are_refused_in_one_line(known_surrogate, tmp_path,
                                                          change, message) -> None:
    path = save_surrogate(known_surrogate, tmp_path / "s.npz")
    arrays = change(_arrays(path))
    np.savez(path, **arrays)
    with pytest.raises(ConfigError, match=message) as error:
        load_surrogate(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    (b"not an archive", "not a NumPy archive"),
])
def test_missing_and_non_archive_files_are_refused(tmp_path, content, message) -> None:
    path = tmp_path / "s.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_surrogate(path)


@pytest.mark.parametrize(("name", "derived"), [("surrogate_template.npz", True),
                                              ("surrogate_template_params_only.npz", False)])
def test_the_committed_benchmark_surrogates_load(name: str, derived: bool) -> None:
    surrogate = load_surrogate(Path(__file__).resolve().parents[2] / "benchmarks" / "data"
                               / name)
    assert surrogate.space_name == "template" and surrogate.info["trials"] >= 300
    assert surrogate.noise_std == pytest.approx(0.0126)
    assert ("output_stride" in surrogate.derived) is derived
