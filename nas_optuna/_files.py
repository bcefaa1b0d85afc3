"""Atomic file writes: a reader sees the old file or the whole new one, never half.

Every file nas-optuna writes in place (feature caches, cost tables, exported networks,
retrained weights, reports, surrogates) goes through :func:`atomic_path`: the content is
written to a temporary file in the target's folder, flushed to disk (``fsync``), given
ordinary permissions (``0o644``; ``mkstemp`` makes files private) and renamed over the
target with :func:`os.replace`. On any error the temporary file is removed and the target
is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], *, prefix: str | None = None,
                mode: int = 0o644) -> Iterator[str]:
    """Yields a temporary path to write; on a clean exit it replaces ``target``.

    Args:
        target: The file to (re)place. Its folder must exist.
        prefix: Start of the temporary file's name (default ``.<name>.``; it ends in
            ``.tmp``), so that a cleaner can find the leftovers of a killed writer.
        mode: Permission bits of the new file.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_path(folder / "a.txt") as tmp:
        ...     _ = pathlib.Path(tmp).write_text("whole")
        >>> (folder / "a.txt").read_text()
        'whole'
    """
    target = Path(target)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".tmp",
                                         prefix=prefix if prefix is not None
                                         else f".{target.name}.")
    os.close(handle)
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
