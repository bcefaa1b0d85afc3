"""Opening a storage once for many reads."""

from __future__ import annotations

import optuna

#: What analyses accept as a storage: an Optuna storage URL or an opened storage.
StorageLike = str | optuna.storages.BaseStorage


def open_storage(storage: StorageLike) -> optuna.storages.BaseStorage:
    """The storage behind a URL (one engine for all the reads that follow), or ``storage``.

    Every URL form of :mod:`nas_optuna.storage` works (SQLite, PostgreSQL, MySQL, journal
    file or Redis, gRPC proxy); that module imports Optuna only, never torch or training.
    Loading several studies by URL would open an engine (and check the schema) each time.
    """
    if isinstance(storage, str):
        from nas_optuna.storage import open_storage as open_url

        return open_url(storage)
    return storage
