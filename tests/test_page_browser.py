"""The status page in a real headless browser (Playwright driving Chromium): it renders the
daemon's state, folder names holding markup stay text (no dialog, no element made of them),
the Content-Security-Policy holds without a violation, the page refreshes by itself, and a
phone screen needs no sideways scrolling.

Chromium comes from the OS (scripts/bootstrap: /usr/bin/chromium), since Playwright's own
download may be out of reach; without either the tests say so and skip.

XNAT_DROP_SCREENSHOTS=1 also writes the README's screenshots into docs/.
"""

from __future__ import annotations

import html
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from xnat_standin import Emulator, Fault
from xnat_standin.demo.samples import SeriesSpec, write_nifti

import conftest
from conftest import PROJECT, Drop, start_daemon, stop_daemon, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parent.parent / "docs"
SCREENSHOTS = os.environ.get("XNAT_DROP_SCREENSHOTS") == "1"
SCANS = [SeriesSpec(1, "localizer", images=2), SeriesSpec(2, "T1_MPRAGE", images=3)]
# Folder names are data: each must come out as text. "/" cannot be in a name, so the script
# tag spans a subject and a session folder: the session shows as "P1/<script>alert(1)</script>".
SCRIPT = (PROJECT, "<script>alert(1)<", "script>")
IMG = (PROJECT, "S02", "<img src=x onerror=alert(2)>")
PHONE = {"width": 375, "height": 667}
DESKTOP = {"width": 1000, "height": 760}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: pip install -e '.[test]'"
    )
    with sync_api.sync_playwright() as playwright:
        own = {"executable_path": str(CHROMIUM)} if CHROMIUM.exists() else {}
        try:
            found = playwright.chromium.launch(args=CHROMIUM_ARGS, **own)
        except sync_api.Error as exc:
            pytest.skip(
                f"no headless browser can be started here ({str(exc).splitlines()[0]}): "
                "install Chromium (apt install chromium, as scripts/bootstrap does) or run "
                "`playwright install chromium`"
            )
        yield found
        found.close()


@dataclass
class Watched:
    """A browser page with what it said: dialogs it opened, console messages, loads."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    loads: int = 0


def watch(browser: Browser, viewport: dict[str, int]) -> Watched:
    page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    watched = Watched(page)

    def on_dialog(dialog: Dialog) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        watched.console.append(message.text)

    def on_load(_: Page) -> None:
        watched.loads += 1

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.console.append(f"page error: {error}"))
    page.on("load", on_load)
    return watched


def no_markup_ran(watched: Watched) -> None:
    """Nothing made of a folder name became an element, and nothing ran."""
    page = watched.page
    assert watched.dialogs == []
    assert page.locator("script").count() == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    violations = [m for m in watched.console if "Content Security Policy" in m or "Refused" in m]
    assert violations == [], violations


def fits_the_width(page: Page) -> None:
    width, inner = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"sideways scrolling: content {width} px, screen {inner} px"


def text_page(browser: Browser, text: str, path: Path) -> None:
    """A screenshot of a text file as a plain viewer shows it."""
    page = browser.new_page(viewport={"width": 760, "height": 200})
    page.set_content(
        "<!DOCTYPE html><meta charset=utf-8><body style='margin:12px;background:#fff'>"
        f"<pre style='font:13px/1.35 monospace;margin:0'>{html.escape(text)}</pre>"
    )
    page.screenshot(path=str(path), full_page=True)
    page.close()


def test_the_daemons_page_in_a_browser(drop: Drop, emulator: Emulator, browser: Browser) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    drop.write_config(
        emulator.url,
        extra=f'[page]\nlisten = "127.0.0.1:{port}"\nrefresh_seconds = 1\n'
        "[routing]\nsanitize_labels = true\n",  # the markup names are fine labels, made safe
        xnat="check_interval_seconds = 1",
    )
    delivered = (PROJECT, "S01", "S01_MR1")
    conftest.drop_session(drop, delivered, SCANS)
    with_nifti = (PROJECT, "S03", "S03_MR1")
    write_nifti(conftest.drop_session(drop, with_nifti, SCANS) / "T1w.nii.gz")
    proc = start_daemon(drop)
    watched = None
    try:
        filed = [drop.done.joinpath(*delivered), drop.failed.joinpath(*with_nifti)]
        wait_until(lambda: all(p.is_dir() for p in filed), "the first two filed", proc)
        # XNAT takes no more uploads: what comes next waits, listed on the page.
        emulator.inject(Fault(method="POST", path="/data/services/import", status=503, times=0))
        for relpath in (SCRIPT, IMG):
            conftest.drop_session(drop, relpath, SCANS)
        copying = conftest.drop_session(drop, (PROJECT, "S04", "S04_MR1"), SCANS)
        (copying / "01_localizer" / "IM0003.dcm.part").write_bytes(b"half")

        def waiting() -> bool:
            work = requests.get(f"{base}/status.json", timeout=5).json()["snapshot"]["work"]
            return {w["session"] for w in work} == {"/".join(SCRIPT), "/".join(IMG)} and all(
                w["state"].startswith("waiting: XNAT") for w in work
            )

        wait_until(waiting, "both markup sessions waiting for XNAT", proc)

        started = time.monotonic()
        watched = watch(browser, DESKTOP)
        page = watched.page
        answer = page.goto(f"{base}/")
        assert answer is not None and answer.status == 200
        headers = answer.headers
        assert headers["content-security-policy"].startswith("default-src 'none'; style-src")
        assert headers["content-type"] == "text/html; charset=utf-8"
        body = page.inner_text("body")
        assert "P1/<script>alert(1)</script>" in body
        assert "P1/S02/<img src=x onerror=alert(2)>" in body
        no_markup_ran(watched)

        # It refreshes by itself: a session dropped now appears with no navigation by us.
        loads = watched.loads
        conftest.drop_session(drop, (PROJECT, "S06", "S06_MR1"), SCANS)
        # (a locator: wait_for_function would need eval, which the page's CSP refuses)
        page.locator("body", has_text="S06_MR1").wait_for(timeout=20_000)
        assert watched.loads > loads
        no_markup_ran(watched)
        if SCREENSHOTS:
            page.screenshot(path=str(DOCS / "status-page.png"), full_page=True)

        page.set_viewport_size(PHONE)  # type: ignore[arg-type]
        page.wait_for_event("load", timeout=5_000)  # the next refresh, at phone size
        fits_the_width(page)
        if SCREENSHOTS:
            page.screenshot(path=str(DOCS / "status-page-phone.png"), full_page=True)
            beside = drop.root / "STATUS.txt"  # its interval may still hold the last change
            wait_until(lambda: "S06_MR1" in beside.read_text(encoding="utf-8"), "STATUS.txt", proc)
            text_page(browser, status_txt(drop, base), DOCS / "status-txt.png")
        no_markup_ran(watched)
        assert time.monotonic() - started < 30, "the browser part should stay quick"
    finally:
        if watched is not None:
            watched.page.close()
        code, stderr = stop_daemon(proc)
    assert code == 0, stderr


def status_txt(drop: Drop, base: str) -> str:
    """STATUS.txt beside incoming/ if the daemon writes one; else the same rendering of the
    page's report (core/statusview.py)."""
    beside = drop.root / "STATUS.txt"
    if beside.exists():
        return beside.read_text(encoding="utf-8").replace("\r\n", "\n")
    from xnat_drop.core.statusview import render_text

    report = requests.get(f"{base}/status.json", timeout=5).json()
    return render_text(report, timezone.utc).replace("\r\n", "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- every list on the page, from a report made up here ----------------------------------

NAMES = {
    "settling": "P1/<b>bold</b>/S01_MR1",
    "not_taken": "P1/<iframe src=/>",
    "work": "P1/<script>alert(3)</script>",
    "last_done": "P1/<img src=x onerror=alert(4)>",
    "last_failed": "P1/<svg onload=alert(5)>/x",
}


def made_up_report() -> dict[str, Any]:
    return {
        "running": True,
        "now": "2027-01-15T08:00:00Z",
        "snapshot": {
            "schema": 1,
            "pid": 1,
            "version": "0.1.0",
            "updated_at": "2027-01-15T08:00:00Z",
            "xnat": {
                "state": "unreachable",
                "detail": "<b>502</b> from the proxy",
                "since": "2027-01-15T07:50:00Z",
                "url": "https://xnat.example",
            },
            "settling": [
                {"session": NAMES["settling"], "files": 3, "bytes": 10, "state": "still changing"}
            ],
            "settling_more": 0,
            "not_taken": [
                {
                    "path": NAMES["not_taken"],
                    "kind": "folder",
                    "reason": "the folder is not group-writable",
                    "fix": "chmod -R g+w '<x>'",
                    "since": "2027-01-15T07:00:00Z",
                    "note": None,
                }
            ],
            "not_taken_more": 0,
            "work": [
                {
                    "session": NAMES["work"],
                    "claim": "c1",
                    "state": "waiting: XNAT unreachable",
                    "attempts": 0,
                    "since": "2027-01-15T07:55:00Z",
                    "last_error": "<script>alert(6)</script>",
                    "progress": None,
                    "retry_at": None,
                    "project": "P1",
                }
            ],
            "work_more": 0,
            "storage": None,
            "today": {"done": 1, "failed": 1},
        },
        "last_done": [
            {
                "session": NAMES["last_done"],
                "at": "2027-01-15T07:40:00Z",
                "where": "/srv/done/x",
                "xnat": "/data/prearchive/projects/P1/1/x",
                "reason": "",
                "project": "P1",
            }
        ],
        "last_failed": [
            {
                "session": NAMES["last_failed"],
                "at": "2027-01-15T07:30:00Z",
                "where": "/srv/failed/x",
                "xnat": "",
                "reason": "nifti",
                "project": None,
            }
        ],
    }


def test_every_list_on_the_page_shows_its_names_as_text(browser: Browser) -> None:
    from xnat_drop.adapters.page import PageServer, Snapshot
    from xnat_drop.core.statusview import render_html, style_hash

    report = made_up_report()
    rendered = render_html(report, timezone.utc, refresh=1)
    missing = [k for k, name in NAMES.items() if html.escape(name) not in rendered]
    assert not missing, f"the page does not show these lists: {missing}"
    server = PageServer("127.0.0.1", 0, stale_after=30.0)
    server.start()
    watched = None
    try:
        server.publish(
            Snapshot(rendered.encode(), b"{}", b"", "text/plain", None, style_hash(), 0.0)
        )
        host, port = server.address
        watched = watch(browser, PHONE)
        watched.page.goto(f"http://{host}:{port}/")
        body = watched.page.inner_text("body")
        for name in NAMES.values():
            assert name in body
        assert "XNAT: down since 07:50" in body
        no_markup_ran(watched)
        fits_the_width(watched.page)
    finally:
        if watched is not None:
            watched.page.close()
        server.close()
