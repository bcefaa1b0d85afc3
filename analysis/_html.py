"""HTML pieces of the report: one page, plotly.js inlined once, tables from pandas."""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f4f4f4; }
td.text, th.text { text-align: left; }
.notes { color: #555; font-size: 0.9rem; }
.meta { color: #666; }
pre { background: #f7f7f7; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }
nav ul { columns: 2; }
"""

_TABLE_IDS = itertools.count()

#: Rows a report table shows before it is cut (the rest are summarised by pandas).
MAX_ROWS = 60


def page(title: str, body: str) -> str:
    """A complete HTML page, with plotly.js inlined once in its head (no network needed)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n"
        f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>\n"
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def escape(text: Any) -> str:
    """``text`` as HTML text."""
    return html.escape(str(text))


def figure(fig: go.Figure, div_id: str) -> str:
    """A figure's div and script, without plotly.js (the page's head holds it)."""
    height = None if fig.layout.height is not None else "520px"
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id,
                       default_height=height or "100%", config={"displaylogo": False})


def table(frame: pd.DataFrame) -> str:
    """A table of ``frame`` (floats to 4 significant digits, text columns left-aligned)."""
    shown = frame.copy()
    text = []
    for position, column in enumerate(shown.columns, start=1):
        if not pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(_cell)
            text.append(position)
    table_id = f"table-{next(_TABLE_IDS)}"
    style = "".join(f"#{table_id} td:nth-child({p}), #{table_id} th:nth-child({p}) "
                    "{ text-align: left; }" for p in text)
    html_table = shown.to_html(index=False, border=0, na_rep="", max_rows=MAX_ROWS,
                               float_format=_number, escape=True, table_id=table_id)
    return (f"<style>{style}</style>\n" if style else "") + html_table


def mapping(values: Mapping[str, Any]) -> str:
    """A two-column table of keys and values (lists and dicts as JSON)."""
    rows = "".join(
        f"<tr><th class=\"text\">{escape(key)}</th><td class=\"text\">{escape(_cell(value))}"
        "</td></tr>"
        for key, value in values.items()
    )
    return f"<table>{rows}</table>"


def slug(text: str) -> str:
    """An id for an HTML anchor."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _number(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if value is None:
        return ""
    return str(value)
