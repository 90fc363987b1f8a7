"""Launching Debian's Chromium for page tests and benchmarks (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# Headless on a closed network: no background connections, no GPU, media may autoplay with sound.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@contextlib.asynccontextmanager
async def launched_chromium() -> AsyncIterator:
    """Debian's Chromium through Playwright, closed on exit (each test module picks its fixture's loop scope)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
