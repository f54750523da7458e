"""``diffrestore serve`` driven by a real browser (Debian's headless Chromium through Selenium).

Why a browser: what a person relies on — the upload reaches the server, the generated option widgets feed
``diffrestore.restore``, the result and the report appear, a bad file is one line in the page — lives in
the page's JavaScript and gradio's queue, which no Python-level test exercises. The run is SR ×2 of a
24×24 crop of a real photo with the small stand-in prior (2 steps, 32-px tiles), so the whole test takes
well under a minute; the image the page shows must equal the Python API's result with the same settings
(same seed), i.e. what ``diffrestore restore`` writes.

Chromium and chromedriver come from Debian (``.ci/run`` installs them); without them the test is skipped
on a developer machine and fails under ``CI=true`` (``tests/needs.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from needs import in_ci, require
from PIL import Image

from diffrestore.api import restore
from diffrestore.io.images import read_image, write_image

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SET5 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "Set5"
TIMEOUT = 60.0


def _need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        msg = f"python package {name} not installed (pip install -e \".[ui]\")"
        if in_ci():
            pytest.fail(msg + " (CI=true: a missing UI dependency is a failure)", pytrace=False)
        pytest.skip(msg, allow_module_level=True)


def test_widgets_cover_every_declared_option() -> None:
    """The page has a widget for every method option (but the server's own) and every task flag of the CLI
    (but the mask file / params, replaced by the drawn mask): generated, so none can be forgotten."""
    from diffrestore.cli.common import add_task_options
    from diffrestore.methods.base import option_groups_of_all
    from diffrestore.methods.options import fields_of
    from diffrestore.ui import options as ui

    declared = set(fields_of(option_groups_of_all()))
    assert {s.name for s in ui.method_specs()} == declared - set(ui.SERVER_OPTIONS)

    p = argparse.ArgumentParser()
    add_task_options(p, required=False)
    flags = {a.dest for a in p._actions if a.option_strings and a.dest != "help"}
    specs = {s.name: s for s in ui.task_specs()}
    assert set(specs) == flags - set(ui.SKIP_TASK_FLAGS)
    assert specs["scale"].applies_to == ("sr", "oldphoto") and "inpaint" in specs["mask_kind"].applies_to
    assert ui.method_values("ddnm", {"steps": "3", "tile": "", "seed": 1.0, "travel": "2,1"}) == \
        {"steps": 3, "seed": 1, "travel": (2, 1)}
    from diffrestore.errors import UserError

    with pytest.raises(UserError, match="steps"):
        ui.method_values("ddnm", {"steps": "0"})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``diffrestore serve`` on a free loopback port, in a subprocess; yields its URL."""
    _need_module("gradio")
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "diffrestore", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + TIMEOUT
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail("diffrestore serve exited early:\n" + "".join(lines), pytrace=False)
            lines.append(line)
            if line.startswith("diffrestore UI: http://127.0.0.1:"):
                break
        else:
            pytest.fail("diffrestore serve did not start in time:\n" + "".join(lines), pytrace=False)
        hint = proc.stdout.readline()  # printed right after the URL: how to expose it
        assert "only this machine can open it" in hint and "--host 0.0.0.0" in hint, hint
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver (nothing is downloaded)."""
    require(CHROMIUM, "Debian's chromium (apt-get install chromium chromium-driver)")
    require(CHROMEDRIVER, "Debian's chromium-driver (apt-get install chromium chromium-driver)")
    _need_module("selenium")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1800", "--disable-extensions"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(predicate: Any, what: str, timeout: float = TIMEOUT) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):  # being re-rendered
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _type(driver: Any, elem_id: str, text: str, enter: bool = False) -> None:
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("css selector", f"#{elem_id} input, #{elem_id} textarea")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    if enter:
        box.send_keys(Keys.ENTER)
    box.send_keys(Keys.TAB)  # commit (gradio updates its value on change / blur)


def _upload(driver: Any, path: Path) -> None:
    driver.find_element("css selector", "#photo input[type=file]").send_keys(str(path))


def _toast(driver: Any) -> str:
    toasts = driver.find_elements("css selector", ".toast-body, [data-testid='toast-body']")
    return " | ".join(t.text for t in toasts if t.text.strip())


def test_browser_sr_run_and_bad_upload(server: str, browser: Any, refs_dir: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    photo = require(SET5 / "butterfly.png", "Set5 photo")
    crop = tmp_path / "crop.png"
    Image.open(photo).convert("RGB").crop((100, 100, 124, 124)).save(crop)
    model, config = refs_dir / "adm_small.safetensors", refs_dir / "adm_small.json"

    browser.get(server)
    _wait(lambda: browser.find_elements("css selector", "#photo input[type=file]"), "the page")
    _upload(browser, crop)
    _wait(lambda: browser.find_elements("css selector", "#photo img"), "the uploaded photo's preview")
    _type(browser, "task-scale", "2")
    _type(browser, "opt-model", str(model), enter=True)
    _type(browser, "opt-config", str(config))
    _type(browser, "opt-steps", "2")
    _type(browser, "opt-tile", "32")
    browser.find_element("css selector", "#run").click()

    def finished() -> str | None:
        toast = _toast(browser)
        assert not toast, f"the page says: {toast}"
        text = browser.find_element("css selector", "#report").text
        return text if "Report: crop.png" in text else None

    report = _wait(finished, "the report", timeout=TIMEOUT)
    plan = browser.find_element("css selector", "#plan").text
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "ui_result.png"))
    assert "network calls" in report and "seam score" in report, report
    assert re.search(r"msr: 48x48 image, \d+ tiles of 32px", plan), plan
    assert not _toast(browser), _toast(browser)

    # the page shows exactly what the API (and so `diffrestore restore`) gives with the same settings
    srcs = _wait(lambda: [i.get_attribute("src") for i in browser.find_elements("css selector", "#result img")
                          if i.get_attribute("src")], "the before/after images")
    shown = []
    for i, src in enumerate(srcs):
        dst = tmp_path / f"shown{i}.png"
        with urllib.request.urlopen(src, timeout=30) as r:  # the server is on 127.0.0.1
            dst.write_bytes(r.read())
        shown.append(np.asarray(Image.open(dst).convert("RGB")))
    res = restore(read_image(crop), "sr", scale=2, model=model, config=config, steps=2, tile=32, seed=0)
    expect = np.asarray(Image.open(write_image(tmp_path / "api.png", res.image)).convert("RGB"))
    assert any(a.shape == expect.shape and np.array_equal(a, expect) for a in shown), \
        [a.shape for a in shown]
    assert browser.find_element("css selector", "#download-png").is_displayed()
    assert not browser.find_elements("css selector", "#download-png16:not([style*='none'])") or \
        not browser.find_element("css selector", "#download-png16").is_displayed()  # the input was 8-bit

    # a file that is not an image: one line in the page, no stack trace
    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture\n")
    _upload(browser, notes)
    time.sleep(1.0)
    browser.find_element("css selector", "#run").click()
    msg = _wait(lambda: _toast(browser), "the error message", timeout=30)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "ui_error.png"))
    assert "notes.png is not an image" in msg, msg
    assert "Traceback" not in msg and "tmp" not in msg.split("notes.png")[0], msg
    print(f"screenshots: {tmp_path / 'ui_result.png'}, {tmp_path / 'ui_error.png'}; "
          f"{time.monotonic() - t0:.1f} s in the browser")
