"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the dashboard
tests and its benchmark. Never `playwright install`: the system browser is used as it is."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why no browser can run here (None when it can)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} missing: sudo apt-get install -y chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright missing: make venv (requirements.dev.txt)"
    return None


@contextlib.contextmanager
def chromium(width: int = 1100, height: int = 1400) -> Iterator[Any]:
    """A fresh browser context (own user-data-dir, nothing kept); yields the Playwright context."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": width, "height": height}, timeout=60000)
        try:
            yield ctx
        finally:
            ctx.close()
