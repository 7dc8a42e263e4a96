"""The Space's tests (tests/test_demo*.py): an app served on 127.0.0.1 with its client, and headless Debian Chromium
through selenium."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

# Skipped only outside CI (a user without the browser); in CI `make setup` installs it, so a missing browser fails.
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (make setup)",
)


@contextlib.contextmanager
def headless_chromium(width: int = 1400, height: int = 1100):
    """A selenium Chrome driver on a fresh profile (removed afterwards), without network chatter of its own."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def served_locally(demo):
    """(url, gradio_client.Client, demo) of `demo` launched on a free port of 127.0.0.1 with the Space's options."""
    from gradio_client import Client

    from hf_frozenlm.spaces import app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
    url = f"http://127.0.0.1:{port}/"
    try:
        yield url, Client(url, verbose=False), demo
    finally:
        demo.close()
