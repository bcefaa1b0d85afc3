"""The stem-feature cache when several workers on one machine need it at once."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from nas_optuna.data import build_dataset
from nas_optuna.training import prepare_search_data
from search_spaces import get_space

# Worker processes: end-to-end, a few seconds each.
pytestmark = pytest.mark.slow


def _prepare(cache_dir: Path, log: Path, sleep_s: float = 0.0) -> Any:
    torch.set_num_threads(1)
    source = build_dataset("synthetic", num_images=12, image_size=[32, 48], num_classes=4)
    space = get_space("template", profile="search")

    def initialise(stem: torch.nn.Module, dataset: Any) -> str:
        with open(log, "a") as handle:  # one line per build, from whichever process
            handle.write(f"{os.getpid()}\n")
        time.sleep(sleep_s)  # a slow build: the other process arrives meanwhile
        return "random"

    return prepare_search_data(
        source, build_stem=space.build_stem, stem_id=space.stem_id, initialise_stem=initialise,
        stem_weights="random", warmup_epochs=0, batch_size=8, cache_dir=cache_dir)


def _digest(data: Any) -> str:
    digest = hashlib.sha256()
    for tensor in [*data.stem_state.values(), *data.train_features, *data.val_features,
                   data.train_labels, data.val_images]:
        digest.update(tensor.float().numpy().tobytes())
    return digest.hexdigest()


def _race(cache_dir: str, log: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(_digest(_prepare(Path(cache_dir), Path(log), sleep_s=2.0)))


def test_two_processes_build_the_cache_once_and_both_load_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    log = tmp_path / "builds.log"
    processes = [context.Process(target=_race, args=(str(tmp_path / "cache"), str(log),
                                                     barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    digests = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert len(log.read_text().split()) == 1  # one build; the other process waited, then read
    assert digests[0] == digests[1]
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and files[0].endswith(".pt") and files[1].endswith(".pt.lock")
    # What they read is what a third process reads now, without building anything.
    assert _digest(_prepare(tmp_path / "cache", log)) == digests[0]
    assert len(log.read_text().split()) == 1


def test_a_corrupt_or_half_written_cache_is_rebuilt(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    first = _digest(_prepare(tmp_path / "cache", log))
    (cache,) = (tmp_path / "cache").glob("*.pt")
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated, as a crash mid-write would
    (tmp_path / "cache" / f"{cache.name}abc.tmp").write_bytes(b"left by a killed builder")
    assert _digest(_prepare(tmp_path / "cache", log)) == first
    assert len(log.read_text().split()) == 2
    assert not list((tmp_path / "cache").glob("*.tmp"))  # the stale temporary file is gone
