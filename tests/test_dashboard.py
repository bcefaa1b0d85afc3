"""``nas-optuna dashboard``: optuna-dashboard serving a study's trials and artifacts.

The end-to-end test starts the command in a subprocess on a free port of 127.0.0.1 and
opens the trial page in a real headless Chromium (Playwright drives the OS's
``/usr/bin/chromium``; nothing is downloaded). Without that browser the test is skipped,
unless ``NAS_OPTUNA_REQUIRE_BROWSER=1`` (CI) makes it fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas_optuna.cli import main
from nas_optuna.cli._dashboard import is_loopback
from nas_optuna.config import parse_config
from nas_optuna.study import run_search
from tests.conftest import tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def stored_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, optuna.Study]:
    """A finished two-trial tiny study with artifacts; its storage URL."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    config = parse_config(tiny_config_dict(tmp_path, study={"n_trials": 2}))
    return config.study.storage, run_search(config)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(stored_study, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``nas-optuna dashboard`` in a subprocess (default host), killed at the end."""
    storage, _ = stored_study
    port = _free_port()
    log_path = tmp_path_factory.mktemp("dashboard-log") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nas_optuna.cli", "dashboard", "--storage", storage,
             "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the dashboard exited with {process.returncode}: "
                            f"{log_path.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not listen within 60 s: "
                                f"{log_path.read_text(errors='replace')}")
                time.sleep(0.2)
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "log": log_path}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _browser_or_skip(chromium: Path) -> None:
    """Skips (or, with ``NAS_OPTUNA_REQUIRE_BROWSER=1``, fails) without Chromium or
    Playwright."""
    required = os.environ.get("NAS_OPTUNA_REQUIRE_BROWSER") == "1"
    missing = None
    if not chromium.exists():
        missing = f"{chromium} is missing: apt-get install chromium"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed: pip install -e '.[dev]'"
    if missing is None:
        return
    if required:
        pytest.fail(f"NAS_OPTUNA_REQUIRE_BROWSER=1 but {missing}")
    pytest.skip(missing)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium of the OS, driven by Playwright."""
    _browser_or_skip(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


@pytest.mark.slow
def test_the_trial_page_shows_trials_note_and_artifacts(browser, stored_study, server) -> None:
    _, study = stored_study
    _, _, body = _get(server["url"] + "/api/studies")
    (summary,) = [s for s in json.loads(body)["study_summaries"] if s["study_name"] == "tiny"]
    page = browser.new_page()
    try:
        page.goto(f"{server['url']}/dashboard/studies/{summary['study_id']}/trials?numbers=0")
        preview = page.locator('img[alt="trial-0-masks.png"]')
        preview.wait_for(timeout=30_000)
        diagram = page.locator('img[alt="trial-0-architecture.svg"]')
        diagram.wait_for(timeout=30_000)
        for name in ("Trial 0", "Trial 1", "trial-0-masks.png", "trial-0-architecture.svg"):
            assert page.get_by_text(name, exact=True).first.is_visible()
        genotype = study.trials[0].user_attrs["genotype"]
        page.get_by_text(genotype, exact=True).first.wait_for(timeout=10_000)  # the note
        # The browser decoded both images (the SVG included).
        for image in (preview, diagram):
            page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                   arg=image.element_handle(), timeout=10_000)
        for image, mimetype, magic in ((preview, "image/png", b"\x89PNG"),
                                       (diagram, "image/svg+xml", b"<")):
            src = image.get_attribute("src")
            assert src.startswith("/artifacts/")
            status, content_type, content = _get(server["url"] + src)
            assert status == 200 and content_type == mimetype
            assert content.startswith(magic)
    finally:
        page.close()


@pytest.mark.slow
def test_the_server_listens_on_loopback_by_default(server) -> None:
    log = server["log"].read_text(errors="replace")
    assert f"http://127.0.0.1:{server['port']}/dashboard/" in log
    assert "warning" not in log


@pytest.fixture
def recorded_server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``optuna_dashboard.run_server`` replaced by a recorder (nothing listens)."""
    import optuna_dashboard

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(optuna_dashboard, "run_server",
                        lambda storage, **kwargs: calls.append({"storage": storage, **kwargs}))
    return calls


@pytest.mark.slow
def test_defaults_wire_the_studies_artifact_store(stored_study, recorded_server, capsys) -> None:
    storage, study = stored_study
    assert main(["dashboard", "--storage", storage]) == 0
    (call,) = recorded_server
    assert (call["host"], call["port"]) == ("127.0.0.1", 8080)
    store = call["artifact_store"]
    assert isinstance(store, optuna.artifacts.FileSystemArtifactStore)
    meta = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)[0]
    with store.open_reader(meta.artifact_id):  # the study's artifact_dir is served
        pass
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_non_loopback_host_prints_a_warning(stored_study, recorded_server, capsys) -> None:
    storage, _ = stored_study
    assert main(["dashboard", "--storage", storage, "--host", "0.0.0.0", "--port", "9"]) == 0
    assert recorded_server[0]["host"] == "0.0.0.0"
    err = capsys.readouterr().err
    assert err.startswith("nas-optuna: warning: listening on 0.0.0.0")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("sqlite:///{tmp}/missing.db", "no database file"),
        ("sqlite:///{tmp}/not-a-db.db", "file is not a database"),
        ("postgresql://alice:s3cret@127.0.0.1:1/nas", "cannot open storage postgresql://alice:***@"),
    ],
)
def test_a_bad_storage_is_a_one_line_error(tmp_path: Path, recorded_server, capsys,
                                           storage: str, message: str) -> None:
    (tmp_path / "not-a-db.db").write_text("hello")
    url = storage.format(tmp=tmp_path)
    assert main(["dashboard", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nas-optuna: error: cannot open storage")
    assert message in err and "s3cret" not in err
    assert len(err.strip().splitlines()) == 1
    assert not recorded_server
    assert not (tmp_path / "missing.db").exists()
    assert (tmp_path / "not-a-db.db").read_text() == "hello"


def test_journal_storages_open_too(tmp_path: Path, recorded_server) -> None:
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "run.log"
    optuna.create_study(storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))),
                        study_name="j")
    assert main(["dashboard", "--storage", f"journal:///{journal}"]) == 0
    (call,) = recorded_server
    assert [s.study_name for s in call["storage"].get_all_studies()] == ["j"]


def test_a_missing_artifact_dir_is_a_one_line_error(recorded_server, capsys,
                                                    tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(storage=storage)
    assert main(["dashboard", "--storage", storage, "--artifact-dir",
                 str(tmp_path / "nowhere")]) == 2
    assert "--artifact-dir" in capsys.readouterr().err
    assert not recorded_server


def test_a_missing_browser_skips_unless_ci_requires_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAS_OPTUNA_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        _browser_or_skip(tmp_path / "chromium")
    monkeypatch.setenv("NAS_OPTUNA_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        _browser_or_skip(tmp_path / "chromium")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
