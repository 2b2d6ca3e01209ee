"""The browser tests wait for up to 10 s where playwright's default is 5 s: under pytest-xdist,
Chromium shares two cores with the other workers."""

from __future__ import annotations

from playwright.async_api import expect

expect.set_options(timeout=10_000)
