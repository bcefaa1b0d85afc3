"""build_report / write_report and ``nas-optuna report``: one self-contained HTML page."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from analysis import build_report, write_report
from nas_optuna.cli import main

_FIGURE = 'class="plotly-graph-div"'
_SEARCH_TITLES = [
    "Reward over search time",
    "reward: controller vs random",
    "Reward vs params_generated",
    "Reward per output_stride",
    "Share of each output_stride over search time",
    "Reward per template (templates some block applies)",
    "Reward per op (used in the network)",
    "Stage-1 vs stage-2 reward",
    "Search vs retrained reward (controller-retrain)",
    "Rank fidelity against compute (controller-retrain)",
]


def _headings(html: str) -> list[str]:
    return re.findall(r"<h2 id=\"s\d+-[^\"]*\">([^<]*)</h2>", html)


def _report(storage: str, study: str, path: Path, *extra: str) -> int:
    return main(["report", "--storage", storage, "--study-name", study, "-o", str(path),
                 "--bootstrap", "100", *extra])


def test_cli_writes_every_figure_self_contained(storage: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "report.html"
    assert _report(storage, "controller", path, "--compare", "random") == 0
    html = path.read_text(encoding="utf-8")
    assert html.count(_FIGURE) == len(_SEARCH_TITLES)
    assert _headings(html) == [t.replace("&", "&amp;") for t in _SEARCH_TITLES]
    for title in _SEARCH_TITLES:
        assert f'"text":"{title}' in html, title  # the figure's own title
    # self-contained: plotly.js inlined once in the head, no script fetched
    assert not re.search(r"<script[^>]+src=", html)
    assert "<script src=\"http" not in html
    assert html.count("plotly.js v") == 1
    head, body = html.split("</head>")
    assert "cdn" not in body  # (plotly.js itself names a CDN for geo maps' topojson)
    # study attrs and summary tables
    assert "<h2 id=\"study\">Study</h2>" in html and "ppo" in html and "synthetic" in html
    assert "<details><summary>train</summary>" in html  # long attrs folded
    assert "Pareto front" not in _headings(html)
    assert "single objective" in html  # listed under "Not shown"
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {path}") and "10 figures" in out


def test_pareto_study_report(storage: str, tmp_path: Path) -> None:
    path = tmp_path / "pareto.html"
    assert _report(storage, "pareto", path) == 0
    html = path.read_text(encoding="utf-8")
    headings = _headings(html)
    assert "Pareto front (reward vs latency_ms)" in headings
    assert "Hypervolume history" in headings
    assert html.count(_FIGURE) == len(headings)
    not_shown = html[html.index('id="not-shown"'):]
    assert "no compare study given" in not_shown and "retrain_of" in not_shown


def test_build_report_without_compare_skips_the_comparison(storage: str) -> None:
    html = build_report(storage, "controller", n_bootstrap=50)
    headings = _headings(html)
    assert "reward: controller vs random" not in headings
    assert "Reward over search time" in headings
    assert html.count(_FIGURE) == len(_SEARCH_TITLES) - 1


@pytest.mark.parametrize(
    ("study", "extra", "message"),
    [
        ("no-such-study", [], "no study 'no-such-study'"),
        ("controller", ["--compare", "nope"], "no study 'nope'"),
        ("empty", [], "no finished trial"),
        ("controller", ["--windows", "0"], "--windows must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(storage: str, tmp_path: Path, capsys, study: str,
                                          extra: list[str], message: str) -> None:
    path = tmp_path / "report.html"
    path.write_text("previous report")
    assert _report(storage, study, path, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-optuna: error:") and err.count("\n") == 1
    assert message in err
    assert path.read_text() == "previous report"  # nothing replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp file


@pytest.mark.parametrize("target", ["missing/report.html", "."])
def test_unwritable_output(storage: str, tmp_path: Path, capsys, target: str) -> None:
    assert _report(storage, "controller", tmp_path / target) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-optuna: error: -o") and err.count("\n") == 1


def test_missing_storage(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/missing/none.db"
    assert _report(url, "controller", tmp_path / "r.html") == 2
    assert capsys.readouterr().err.startswith("nas-optuna: error: cannot open storage")


def test_write_report_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "r.html"
    path.write_text("old")
    write_report("<html>new</html>", path)
    assert path.read_text() == "<html>new</html>"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    with pytest.raises(OSError):
        write_report("x", tmp_path / "missing" / "r.html")
    with pytest.raises(IsADirectoryError):
        write_report("x", tmp_path)


def test_report_reads_a_journal_storage(storage: str, tmp_path: Path) -> None:
    """Every storage URL form of the runner works for analyses too (here journal:///)."""
    journal = f"journal:///{tmp_path / 'studies.log'}"
    from nas_optuna.storage import open_storage

    optuna.copy_study(from_study_name="controller", from_storage=storage,
                      to_storage=open_storage(journal))
    path = tmp_path / "report.html"
    assert _report(journal, "controller", path) == 0
    html = path.read_text(encoding="utf-8")
    assert html.count(_FIGURE) >= 5 and "Reward over search time" in html


def test_analysis_reads_the_storage_without_torch_or_training_code(storage: str) -> None:
    """The design's rule: analyses need only the storage, not the training stack."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from analysis import build_report, trials_frame\n"
        f"build_report({storage!r}, 'controller', compare=['random'])\n"
        f"trials_frame({storage!r}, ['controller'])\n"
        "loaded = [m for m in ('torch', 'nas_optuna.training', 'search_spaces') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
