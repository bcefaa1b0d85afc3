"""Writing a benchmark's generated tables into its hand-written doc."""

from __future__ import annotations

from pathlib import Path


def write_between_markers(path: Path, text: str, name: str) -> None:
    """Replaces what stands between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in
    ``path`` (the doc's hand-written text around the generated tables stays); a file
    without the markers gets the tables alone."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        path.write_text(head + block + tail)
    else:
        path.write_text(block)
