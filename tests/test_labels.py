"""One ignore label: datasets, losses, metrics, proxies and previews share its value."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import nas_optuna
from nas_optuna import artifacts, data, metrics, proxies
from nas_optuna.labels import IGNORE_INDEX


def test_every_user_of_the_ignore_label_takes_the_one_definition() -> None:
    assert data.IGNORE_INDEX is IGNORE_INDEX is metrics.IGNORE_INDEX
    assert inspect.signature(metrics.ConfusionMatrix).parameters[
        "ignore_index"].default == IGNORE_INDEX
    assert proxies.IGNORE_INDEX is IGNORE_INDEX and artifacts.IGNORE_INDEX is IGNORE_INDEX
    package = Path(nas_optuna.__file__).parent
    copies = [str(path.relative_to(package)) for path in package.rglob("*.py")
              if path.name != "labels.py"
              and re.search(r"^\s*_?IGNORE_INDEX\s*=", path.read_text(), re.MULTILINE)]
    assert copies == []
