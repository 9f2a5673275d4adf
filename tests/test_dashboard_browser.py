"""The dashboard in a real headless browser (SPEC §9): Debian's Chromium, driven by Playwright, against a
real `spoold dashboard` subprocess over a spool filled by a real daemon.

Chromium comes from Debian (`apt-get install chromium`, which .ci/run does), not from `playwright install`:
without /usr/bin/chromium these tests fail, saying so; they never skip.

Every test takes its screenshots into its own tmp_path. `SPOOLD_SCREENSHOTS=docs/screenshots` puts them
there instead, to refresh the pictures in README.md:
    SPOOLD_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest -q tests/test_dashboard_browser.py
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import HOSTILE, REPO, Project, fill_for_dashboard, free_port, http_ok, wait_for
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = "/usr/bin/chromium"
# The machine's network is closed: without these Chromium keeps trying its own background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = (f"the browser tests need Debian's Chromium at {CHROMIUM}: as root, `apt-get update && "
                "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium` "
                "(.ci/run does it); `playwright install` cannot download browsers here")
VIEWPORT = {"width": 1200, "height": 800}
SCREENSHOT_LIMIT = 300 * 1024
# Records every Content-Security-Policy violation of the page. An init script is injected by the browser
# itself before the page's own scripts, so the page's CSP does not block it.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""
LIGHT_BG, DARK_BG = "rgb(255, 255, 255)", "rgb(20, 23, 28)"  # --bg of dashboard.css


@dataclass
class Filled:
    """Two done, two failed (a RuntimeError and a ValueError), a hostile job waiting in low/, a rejected file."""

    done: list[str]
    failed: list[str]
    waiting: str


@dataclass
class Watch:
    """What the page said besides its content: dialogs, console messages, uncaught errors."""

    dialogs: list[str] = field(default_factory=list)
    console: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def console_errors(self) -> list[str]:
        """Every console error (the pages name an empty icon, so Chromium asks for no /favicon.ico)."""
        return [f"{m.text} at {m.location.get('url')}" for m in self.console if m.type == "error"]

    def csp_messages(self) -> list[str]:
        return [m.text for m in self.console if "Content Security Policy" in m.text]

    def assert_quiet(self, page: Page) -> None:
        assert self.dialogs == [], f"a script opened a dialog: {self.dialogs}"
        assert self.page_errors == [], f"uncaught errors in the page: {self.page_errors}"
        assert self.console_errors() == [], f"console errors: {self.console_errors()}"
        assert self.csp_messages() == [], f"CSP violations in the console: {self.csp_messages()}"
        assert page.evaluate("window.__csp") == [], "a securitypolicyviolation event fired"


@dataclass
class Web:
    """The browser page on the dashboard, and what it has said so far."""

    page: Page
    watch: Watch
    base: str
    shots: Path

    def open(self, path: str) -> None:
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == 200, f"GET {path}: {response and response.status}"

    def shot(self, name: str) -> Path:
        """A PNG of what the viewport shows now."""
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        assert 0 < path.stat().st_size < SCREENSHOT_LIMIT, f"{path}: {path.stat().st_size} bytes"
        return path


# -- fixtures -----------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A `spoold dashboard` subprocess, and where it listens."""

    proc: subprocess.Popen[str]
    base: str
    log: Path

    def wait_until_it_answers(self) -> str:
        def answers() -> bool:
            assert self.proc.poll() is None, f"spoold dashboard exited {self.proc.returncode}: {self.log.read_text()}"
            return http_ok(f"{self.base}/api/status")

        wait_for(answers, 15, "the dashboard answers")
        return self.base


@pytest.fixture
def dashboard(project: Project, tmp_path: Path) -> Iterator[Server]:
    """`spoold dashboard` on a free loopback port, open (no token: SPOOLD_DASHBOARD_* are left out of its
    environment). Started first, so that it boots while the spool fills; killed and reaped whatever happens
    (here, and again by the project fixture, which reaps every process it knows)."""
    port = free_port()
    env = {key: value for key, value in project.env().items() if not key.startswith("SPOOLD_DASHBOARD_")}
    log = tmp_path / "dashboard.log"
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "-m", "spoold", "dashboard", "--port", str(port), "--config",
                                 str(project.config)], cwd=project.root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    project.procs.append(proc)
    try:
        yield Server(proc, f"http://127.0.0.1:{port}", log)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def filled(project: Project, dashboard: Server) -> Filled:
    """The spool as a real daemon leaves it (`spoold start --drain`), then one job waiting."""
    return Filled(*fill_for_dashboard(project))


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless. One per test: Playwright's sync API keeps an event loop of its own, which
    is best not left open while pytest-xdist hands this worker tests of other files."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except PlaywrightError as error:
            pytest.fail(f"Chromium did not start ({error.message.splitlines()[0]}): {INSTALL_HINT}", pytrace=False)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def web(browser: Browser, dashboard: Server, tmp_path: Path) -> Iterator[Web]:
    base = dashboard.wait_until_it_answers()
    context = browser.new_context(viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]})
    context.set_default_timeout(5000)
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    watch = Watch()

    def on_dialog(dialog: Dialog) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda message: watch.console.append(message))
    page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
    wanted = os.environ.get("SPOOLD_SCREENSHOTS")
    shots = (REPO / wanted if not Path(wanted).is_absolute() else Path(wanted)) if wanted else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Web(page, watch, base, shots)
    finally:
        context.close()


def rows(page: Page) -> list[str]:
    """The text of each row of the job table."""
    return [text.strip() for text in page.locator("table.jobs tbody tr").all_inner_texts()]


# -- the tests ----------------------------------------------------------------------------------------------


def test_the_overview_shows_the_counts_and_drops_its_banner_once_a_daemon_lives(
        project: Project, filled: Filled, web: Web) -> None:
    web.open("/")
    page = web.page
    expected = {"high": 0, "medium": 0, "low": 1, "scheduled": 0, "running": 0, "done": 2, "failed": 2,
                "rejected": 1}
    shown = {name: int(page.locator(f'[data-count="{name}"]').inner_text()) for name in expected}
    assert shown == expected
    banner = page.locator("#no-daemon")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("No live daemon")
    expect(page.locator("svg.chart").first).to_be_visible()
    web.shot("overview")
    page.evaluate("window.__loaded_once = true")  # gone if the page were reloaded
    project.start()
    expect(banner).to_be_hidden(timeout=8000)  # dashboard.js polls /api/status every 5 s
    expect(page.locator("#daemons tbody")).not_to_contain_text("none alive")  # the table follows the poll too
    assert page.evaluate("window.__loaded_once") is True, "the banner went by a reload, not by the poll"
    web.watch.assert_quiet(page)


def test_a_list_filtered_by_class_and_by_error_type(filled: Filled, web: Web) -> None:
    web.open("/jobs?state=failed")
    page = web.page
    assert len(rows(page)) == 2
    web.shot("jobs-failed")
    page.locator('form.filters input[name="error"]').fill("ValueError")
    page.locator("form.filters button").click()
    page.wait_for_url(re.compile(r"error=ValueError"))
    [row] = rows(page)
    assert filled.failed[1] in row and "ValueError" in row
    assert page.locator('input[name="error"]').input_value() == "ValueError", "the form keeps the filter"

    page.locator('input[name="error"]').fill("")
    page.locator('input[name="class"]').fill("Echo")
    page.locator("form.filters button").click()
    page.wait_for_url(re.compile(r"class=Echo"))
    assert rows(page) == ["no jobs match"]
    page.locator('input[name="class"]').fill("Raise")
    page.locator("form.filters button").click()
    page.wait_for_url(re.compile(r"class=Raise"))
    assert sorted(row.split()[0] for row in rows(page)) == sorted(filled.failed)
    web.watch.assert_quiet(page)


def test_a_job_opened_from_its_list_shows_its_timeline_and_traceback(filled: Filled, web: Web) -> None:
    job_id = filled.failed[0]
    web.open("/jobs?state=failed")
    page = web.page
    page.get_by_role("link", name=job_id, exact=True).click()
    page.wait_for_url(f"**/jobs/{job_id}")
    expect(page.locator("h1")).to_contain_text("Raise.handle")
    expect(page.locator("p.state")).to_contain_text("failed/")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("attempt 1: failure")
    expect(timeline).to_contain_text("log: started")
    expect(timeline).to_contain_text("log: failure")
    expect(page.locator("p.error")).to_have_text("RuntimeError: boom")
    traceback = page.locator("p.error + pre.traceback")  # the last error's, under its one line
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("RuntimeError: boom")
    expect(page.locator("pre.shell")).to_contain_text(f"spoold retry {job_id}")
    web.shot("job")
    web.watch.assert_quiet(page)


def assert_not_refused(page: Page) -> None:
    """A post that came back as a refusal page says why. (A real browser found one that the server-side tests
    could not: with `Referrer-Policy: no-referrer` Chromium posted `Origin: null`, and every form was refused.)"""
    refused = page.locator("#refused")
    assert refused.count() == 0, f"the dashboard refused the post: {refused.inner_text()}"


def test_retry_from_the_job_page_moves_the_file_back_to_a_ready_folder(
        project: Project, filled: Filled, web: Web) -> None:
    job_id = filled.failed[0]
    web.open(f"/jobs/{job_id}")
    page = web.page
    assert project.has("failed", job_id)
    with page.expect_navigation():
        page.locator("#retry").click()
    assert_not_refused(page)
    assert page.url == f"{web.base}/jobs/{job_id}", "the post answers 303 to the job's page"
    expect(page.locator("p.state")).to_contain_text("medium/")
    assert project.has("medium", job_id) and not project.has("failed", job_id)
    expect(page.locator("#retry")).to_have_count(0)
    expect(page.locator("#cancel")).to_be_visible()
    web.watch.assert_quiet(page)


def test_bulk_cancel_through_the_confirmation_page(project: Project, filled: Filled, web: Web) -> None:
    echoes = [filled.waiting] + [project.submit("Echo", "handle", [f"bulk {i}"], priority="low") for i in range(2)]
    other = project.submit("Sleep", "handle", [0.1], priority="low")
    web.open("/jobs?state=low")
    page = web.page
    assert len(rows(page)) == 4
    page.locator('input[name="class"]').fill("Echo")
    page.locator("form.filters button").click()
    page.wait_for_url(re.compile(r"class=Echo"))
    assert sorted(row.split()[0] for row in rows(page)) == sorted(echoes)
    page.locator("#bulk-cancel").click()
    page.wait_for_url(re.compile(r"/bulk\?"))
    expect(page.locator("#bulk-count")).to_contain_text("3 jobs match now.")
    expect(page.locator("#confirm")).to_have_text("Cancel these 3 jobs")
    web.shot("bulk-confirm")
    assert sorted(project.names("low")) == sorted(f"{i}.json" for i in [*echoes, other]), "nothing moved yet"
    with page.expect_navigation():
        page.locator("#confirm").click()
    assert_not_refused(page)
    expect(page.locator("#bulk-result")).to_have_text("Matched 3, cancel done for 3, skipped 0.")
    assert project.names("low") == [f"{other}.json"]
    for job_id in echoes:
        assert project.doc("failed", job_id)["error"]["type"] == "Cancelled"
    web.watch.assert_quiet(page)


def test_a_hostile_job_runs_no_script_on_its_page_or_its_list(filled: Filled, web: Web) -> None:
    page = web.page
    web.open(f"/jobs/{filled.waiting}")
    document = page.locator("#document")
    for text in HOSTILE:
        expect(document).to_contain_text(json.dumps(text))  # shown as text, in the JSON of the document
    assert page.locator("main script, main img").count() == 0
    web.open("/jobs?state=low&q=script")
    [row] = rows(page)
    assert filled.waiting in row
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    web.watch.assert_quiet(page)

    # The watch itself sees a violation: an inline script added now is refused by the CSP, and reported.
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.__ran = 1";
                             document.head.append(s); }""")
    wait_for(lambda: web.watch.csp_messages(), 3, "the console reports the refused inline script")
    assert page.evaluate("window.__ran") is None
    assert any("script-src" in v for v in page.evaluate("window.__csp"))


def test_the_errors_and_statistics_pages(filled: Filled, web: Web) -> None:
    page = web.page
    web.open("/errors")
    entries = page.locator("pre.traceback")
    expect(entries).to_have_count(3)  # newest first: the two failures and the rejected file
    texts = entries.all_inner_texts()
    assert any(f"job={filled.failed[0]} " in t and t.endswith("RuntimeError: boom") for t in texts)
    assert any(f"job={filled.failed[1]} " in t and t.endswith("ValueError: bad input") for t in texts)
    assert any("job=broken status=rejected" in t for t in texts)
    web.shot("errors")
    page.locator('input[name="q"]').fill("ValueError")
    page.locator("form.filters button").click()
    page.wait_for_url(re.compile(r"q=ValueError"))
    expect(entries).to_have_count(1)
    expect(entries).to_contain_text("ValueError: bad input")

    web.open("/stats")
    table = page.locator("#stats tbody tr")
    by_class = {line.split("\t")[0]: line.split("\t")[1:3] for line in table.all_inner_texts()}
    assert by_class == {"Echo": ["2", "0"], "Raise": ["2", "2"]}
    expect(page.locator("svg.chart")).to_be_visible()
    web.shot("stats")
    web.watch.assert_quiet(page)


def test_dark_mode_follows_the_system_colour_scheme(filled: Filled, web: Web) -> None:
    page = web.page
    page.emulate_media(color_scheme="light")
    web.open("/")

    def background() -> str:
        value: str = page.evaluate("getComputedStyle(document.body).backgroundColor")
        return value

    assert background() == LIGHT_BG
    page.emulate_media(color_scheme="dark")
    assert background() == DARK_BG
    web.shot("overview-dark")
    web.watch.assert_quiet(page)


@pytest.fixture
def scheduled(project: Project) -> Path:
    """A [schedule] entry every second (before the dashboard starts, so it reads it); its records file."""
    records = project.root / "records.txt"
    entry = f'tick = {{ class = "RecordRun", params = ["{records}"], every = "1s" }}'
    project.configure(extra=f'RecordRun = ["handle"]\n\n[schedule]\n{entry}\n', settle_seconds=0, rescan_seconds=1)
    return records


def test_the_overview_lists_the_schedule_with_its_last_slots_job(project: Project, scheduled: Path, web: Web) -> None:
    daemon = project.start()
    wait_for(lambda: any(n.startswith("cron-tick-") for n in project.names("done")), 15, "a slot's job in done/")
    web.open("/")
    table = web.page.locator("#schedule")
    for text in ("tick", "RecordRun.handle", "every 1s", "cron-tick-"):
        expect(table).to_contain_text(text)
    expect(table).to_contain_text(re.compile(r"\((done|medium|running)\)"))  # a slot a second: any of these
    web.shot("overview-schedule")
    table.locator("a").first.click()
    expect(web.page.locator("h1")).to_contain_text("cron-tick-")
    web.watch.assert_quiet(web.page)
    assert project.stop(daemon)[0] == 0


@pytest.fixture
def limited(project: Project) -> None:
    """Sleep limited to one at once (before the dashboard starts, so it reads it)."""
    project.configure(extra="\n[concurrency]\nSleep = 1\n", settle_seconds=0, rescan_seconds=1)


def test_a_job_waiting_for_its_class_limit_says_why_and_the_overview_shows_the_limit(
        project: Project, limited: None, web: Web) -> None:
    marker = project.root / "long.pid"
    first = project.submit("Sleep", "handle", ["30", str(marker)], unique_key="only-one")
    second = project.submit("Sleep", "handle", ["0"])
    daemon = project.start()
    wait_for(marker.exists, 10, "the first Sleep running")
    web.open("/")
    expect(web.page.locator("#concurrency tbody td")).to_have_text(["Sleep", "1", "1"])
    web.open(f"/jobs/{second}")
    expect(web.page.locator("#why")).to_contain_text("its class Sleep is at its [concurrency] limit: 1 of 1 running")
    expect(web.page.locator("#rules")).to_contain_text("its class runs at most 1 at once across the spool")
    web.open(f"/jobs/{first}")
    expect(web.page.locator("#rules")).to_contain_text("unique_key 'only-one': held by this job")
    web.shot("job-limited")
    web.watch.assert_quiet(web.page)
    project.stop(daemon)
