"""``lesionssl serve`` in a real browser: headless Chromium uploads an image and reads the result."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)"),
]
#: A closed network refuses Chromium's background connections; these flags keep it from trying.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(fine_tuned, tmp_path):
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    process = subprocess.Popen(
        [sys.executable, "-m", "lesionssl", "serve", "--model", str(fine_tuned / "ft"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"serve did not start: {process.stdout.read()}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_a_dropped_image_shows_probabilities_malignancy_and_its_map(server, fine_tuned, tmp_path):
    from lesionssl.data.split import read_manifest
    from lesionssl.deploy.serve import Analyser

    image = read_manifest(fine_tuned / "split.csv").rows("test")["path"].iloc[0]  # resolved below the data root
    expected = Analyser(fine_tuned / "ft")(image)
    p_malignant = re.search(r"P\(malignant\) = [0-9.]+", expected.decision).group(0)
    top = max(expected.probabilities, key=expected.probabilities.get)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is not a picture")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server)
            page.locator("#upload input[type=file]").set_input_files(image)
            decision = page.locator("#decision")
            sync_api.expect(decision).to_contain_text(p_malignant, timeout=60_000)
            sync_api.expect(decision).to_contain_text("the operating point")
            sync_api.expect(page.locator("#probabilities")).to_contain_text(top)
            sync_api.expect(page.locator("#gradcam img")).to_be_visible()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            page.locator("#upload").get_by_label("Clear").click()  # the file input comes back once the file is removed
            page.locator("#upload input[type=file]").set_input_files(str(not_an_image))
            sync_api.expect(page.get_by_text("cannot read image").first).to_be_visible(timeout=60_000)
        finally:
            browser.close()
