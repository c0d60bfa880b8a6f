"""The live dashboard in a real headless browser: Debian's chromium, driven by Playwright.

The pipeline runs on the real broker; `devline ui` serves the read side with the page on a
free port; chromium opens `/?plan=<id>` while the plan runs and must see file states change
without a reload, then every file verified. A screenshot taken mid-run is kept under
`.cache/test-artifacts/` (or `$DEVLINE_TEST_ARTIFACTS`).

A machine without chromium fails here, naming `scripts/bootstrap`, which installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devline.settings import Settings
from devline.supervisor import child_env
from streams import topics as T
from tests.harness import events, running_pipeline, submit, wait_for_pool

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("DEVLINE_TEST_ARTIFACTS") or ROOT / ".cache" / "test-artifacts")
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")


def chromium() -> str:
    """Debian's chromium (or $DEVLINE_CHROMIUM); fail, not skip, when it is missing."""
    given = os.environ.get("DEVLINE_CHROMIUM")
    found = given or next((p for c in CHROMIUM_CANDIDATES if (p := shutil.which(c))), None)
    if not found or not os.access(found, os.X_OK):
        pytest.fail("chromium is not installed: run scripts/bootstrap (as root it installs "
                    "Debian's chromium and chromium-driver), or set DEVLINE_CHROMIUM to a "
                    "Chromium executable", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, method: str = "GET", headers: dict[str, str] | None = None
              ) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - our own loopback
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def until(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextlib.contextmanager
def dashboard(settings: Settings, port: int, log: Path, *args: str) -> Iterator[str]:
    """`devline ui --port PORT`: nothing answers there, so it serves the read side itself."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devline", "ui", "--port", str(port), "--no-open", *args],
            env=child_env(settings), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        until("the read side to catch up", lambda: proc.poll() is not None
              or http_json(f"{base}/healthz")[0] == 200, 60)
        assert proc.poll() is None, f"devline ui exited: {log.read_text()[-2000:]}"
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def node_states(page: Any) -> dict[str, str]:
    return dict(page.eval_on_selector_all(
        "#dag g.node", "gs => gs.map(g => [g.dataset.task, g.dataset.state])"))


PLAN_FILES = [
    # a chain (the critical path) and a side branch: states change for several seconds
    {"path": "app/base.py", "content": "BASE = 1\n", "cost": 2,
     "simulate": {"duration_s": 1.5}},
    {"path": "app/core.py", "content": "from app.base import BASE\n\nCORE = BASE + 1\n",
     "cost": 2, "simulate": {"duration_s": 1.5}},
    {"path": "app/api.py", "content": "from app.core import CORE\n\nAPI = CORE + 1\n",
     "cost": 2, "simulate": {"duration_s": 1.5}},
    {"path": "app/util.py", "content": "UTIL = 2\n", "cost": 1,
     "simulate": {"duration_s": 1.0}},
    {"path": "app/cli.py", "content": "from app.api import API\nfrom app.util import UTIL\n\n"
     "CLI = API + UTIL\n", "cost": 1, "simulate": {"duration_s": 1.0}},
]


def test_the_dashboard_shows_file_states_change_live(topics: Settings, tmp_path: Path) -> None:
    browser_path = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run scripts/bootstrap (the test extra)",
                    pytrace=False)
    settings = topics
    port = free_port()
    with running_pipeline(settings, workers=2), \
            dashboard(settings, port, tmp_path / "ui.log") as base:
        wait_for_pool(settings, 2)
        plan_id = submit(settings, {"project": "ui", "name": "dashboard e2e",
                                    "files": PLAN_FILES})
        until("the plan in the read side",
              lambda: http_json(f"{base}/api/ui/plans/{plan_id}")[0] == 200, 60)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"{base}/?plan={plan_id}")
                page.wait_for_selector("body[data-ready='1']", timeout=20_000)
                page.wait_for_selector("#dag g.node", timeout=20_000)
                page.evaluate("window.__sameLoad = 'yes'")  # gone if the page reloads

                first = node_states(page)
                assert set(first) == {f["path"] for f in PLAN_FILES}
                assert page.get_attribute("#conn", "data-state") in ("live", "connecting")
                critical = page.eval_on_selector_all(
                    "#dag g.node.critical", "gs => gs.map(g => g.dataset.task)")
                chain = ["app/base.py", "app/core.py", "app/api.py", "app/cli.py"]
                assert sorted(critical) == sorted(chain)
                assert page.evaluate("window.devlineUI.plan.critical_path") == chain
                counters = page.text_content("#dag g.node[data-task='app/base.py'] .counters")
                assert counters is not None and "try 1" in counters and "fix 0" in counters

                # Live: some node's state changes while the page stays the same page.
                changed = until("a node's state to change live", lambda: (
                    (now := node_states(page)) != first and now), 60)
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / f"ui-{plan_id}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                assert page.evaluate("window.__sameLoad") == "yes"
                live = page.evaluate("window.devlineUI.live")
                assert live["events"] + live["snapshots"] > 0, live
                assert changed != first

                until("every file verified on the page", lambda: set(
                    node_states(page).values()) == {"verified"}, 90)
                assert page.evaluate("window.__sameLoad") == "yes"
                assert page.evaluate("window.devlineUI.live.events") > 0
                lanes = page.text_content("#workers-count") or ""
                assert "live" in lanes
                assert page.is_disabled("#promote") and page.is_disabled("#abort")
                page.screenshot(path=str(ARTIFACTS / f"ui-{plan_id}-done.png"), full_page=True)
                assert not errors, errors
            finally:
                browser.close()
    print(f"screenshots: {ARTIFACTS}/ui-{plan_id}.png, ui-{plan_id}-done.png")


def test_the_token_guards_the_api_and_the_buttons_send_rollout_controls(
        topics: Settings, tmp_path: Path) -> None:
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    settings = topics
    port = free_port()
    bearer = {"Authorization": "Bearer s3cret"}
    with dashboard(settings, port, tmp_path / "ui.log", "--token", "s3cret") as base:
        assert http_json(f"{base}/api/ui/plans")[0] == 401
        assert http_json(f"{base}/api/ui/plans", headers=bearer) == (200, {"plans": []})
        control = f"{base}/api/rollouts/p-ui/promote"
        assert http_json(control, "POST", {"X-Devline-UI": "1"})[0] == 401
        assert http_json(control, "POST", bearer)[0] == 403  # no header: maybe a forged form
        assert http_json(f"{base}/api/rollouts/p-ui/delete", "POST",
                         {**bearer, "X-Devline-UI": "1"})[0] == 400
        status, sent = http_json(control, "POST", {**bearer, "X-Devline-UI": "1"})
        assert status == 200 and sent["sent"] == "promote"
        status, abort = http_json(f"{base}/api/rollouts/p-ui/abort", "POST",
                                  {**bearer, "X-Devline-UI": "1"})
        assert status == 200
        assert http_json(f"{base}/api/rollouts/p-ui", headers=bearer) == (
            200, {"rollout": False, "plan": "p-ui"})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=browser_path, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page()
                page.goto(f"{base}/?token=s3cret")  # no plan: the picker, over the token
                page.wait_for_selector("#conn[data-state='live']", timeout=20_000)
                until("the picker's note", lambda: "no live plan" in (
                    page.text_content("#picker-note") or ""), 10)
                page.goto(f"{base}/")  # without the token the socket is refused
                page.wait_for_timeout(1500)
                assert page.get_attribute("#conn", "data-state") != "live"
            finally:
                browser.close()
    controls = [v for _, et, v in events(settings, T.ROLLOUTS) if et == "RolloutControl"]
    assert [(c["plan_id"], c["action"], c["event_id"]) for c in controls] == [
        ("p-ui", "promote", sent["event_id"]), ("p-ui", "abort", abort["event_id"])]
    assert all(c["by"].startswith("ui@") for c in controls)
