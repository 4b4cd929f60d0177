"""Browser fixtures: headless Chromium (Debian's ``chromium``) driven by Playwright, and the
whole system under test (:mod:`tests.browser.stack`).

Without a browser (no ``/usr/bin/chromium`` or no ``playwright`` package) the suite is skipped
with a message saying what to install; with ``CI`` set it fails instead, so CI can never pass
by not running it. Playwright never downloads a browser here: it drives the system Chromium
(``executable_path``). Everything is package-scoped: one browser and one stack for the suite.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.servers import SmtpCatcher
from tests.browser.stack import Person, Stack, stack_settings

CHROMIUM = os.environ.get("LECTERN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
RESULTS = Path(__file__).with_name("results")
DOCS_SHOTS = Path(__file__).parents[2] / "docs" / "screenshots"
#: The screenshots copied to docs/screenshots/: one per page.
DOCS_PAGES = ("login", "student", "live-student", "live-instructor", "instructor")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
#: How long an expectation waits for the page (events cross gateway, Redis and workers).
WAIT_MS = 10_000


def expect(target: Any) -> Any:
    """Playwright's ``expect``, imported on use so a machine without the package collects
    these tests (and skips them) instead of failing on an import."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[dev]'"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    return None


_skipped: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it at the end of a quiet run too (``pytest -q`` hides skip reasons)."""
    if _skipped:
        terminalreporter.write_line(f"browser tests skipped: {_skipped[0]}", yellow=True)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run in CI: {missing}", pytrace=False)
        _skipped.append(missing)
        pytest.skip(f"browser tests skipped: {missing}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    RESULTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def stack(browser: Any, redis_url: str, database_url: str, smtp: SmtpCatcher) -> Iterator[Stack]:
    running = Stack(stack_settings(redis_url, database_url, smtp.url)).start()
    yield running
    running.stop()


class Pages:
    """Opens pages as a given person, each in its own browser context (own sessionStorage,
    own network, like another device), and checks that no page threw an uncaught error."""

    def __init__(self, browser: Any, stack: Stack) -> None:
        self.browser = browser
        self.stack = stack
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    def open(
        self,
        person: Person | None,
        path: str,
        *,
        viewport: dict[str, int] = DESKTOP,
        init_script: str = "",
    ) -> Any:
        context = self.browser.new_context(viewport=viewport, base_url=self.stack.api_url)
        self.contexts.append(context)
        if person is not None:
            if not person.session:
                self.stack.call(self.stack.login(person))
            value = json.dumps(json.dumps(person.session))
            context.add_init_script(
                "if (!sessionStorage.getItem('lectern.session'))"
                f" sessionStorage.setItem('lectern.session', {value});"
            )
        if init_script:
            context.add_init_script(init_script)
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{path}: {exc}"))
        page.on("console", lambda msg: self._console(path, msg))
        page.goto(path, wait_until="commit")  # pages load side by side; ready() waits
        return page

    def _console(self, path: str, msg: Any) -> None:
        # Network errors are expected (the tests cut connections); a CSP refusal never is.
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.errors.append(f"{path}: {msg.text}")

    def ready(self, page: Any, transport: str | None = None) -> None:
        """Wait for the page's data and its gateway connection (optionally on `transport`)."""
        page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        # Predicates are functions, never expression strings: Playwright evaluates those with
        # eval(), which the pages' CSP refuses.
        page.wait_for_function(
            "(t) => window.lectern && window.lectern.state.status === 'open'"
            " && (!t || window.lectern.transport === t)",
            arg=transport,
            timeout=WAIT_MS,
        )

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Any, stack: Stack) -> Iterator[Pages]:
    opened = Pages(browser, stack)
    yield opened
    opened.close()
    stack.call(stack.ensure_gateway())
    assert not opened.errors, opened.errors


@pytest.fixture
def shot() -> Callable[[Any, str], None]:
    """``shot(page, name)``: a PNG in tests/browser/results/ (and, with
    ``LECTERN_DOCS_SCREENSHOTS=1``, a copy in docs/screenshots/ for docs/pages.md)."""

    def take(page: Any, name: str) -> None:
        path = RESULTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        if os.environ.get("LECTERN_DOCS_SCREENSHOTS") and name in DOCS_PAGES:
            DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")

    return take
