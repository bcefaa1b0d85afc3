"""Label conventions shared by datasets, losses, metrics, proxies and previews."""

from __future__ import annotations

__all__ = ["IGNORE_INDEX"]

#: Mask value excluded from the loss and the metrics (void, unlabelled, object borders):
#: the one definition every dataset, loss, metric, proxy and preview uses.
IGNORE_INDEX = 255
