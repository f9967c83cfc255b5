"""The report in a real browser: headless Chromium (the system's) driven by Playwright.

Checks that the page loads with no console error and no request but the file itself, that its
screenshot is not blank, that it prints, and that the DOM holds the AUROCs of ``evaluate --json``.
Skips, saying why, where Playwright's Python package or a Chromium binary is missing.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from cli_helpers import run, run_json
from PIL import Image

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--mute-audio"]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """``$OODFLOW_CHROMIUM``, else the first Chromium on PATH."""
    given = os.environ.get("OODFLOW_CHROMIUM")
    return given if given and os.path.isfile(given) else next(filter(None, map(shutil.which, NAMES)), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed "
                                   "(pip install playwright; its own browser download is not needed)")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set OODFLOW_CHROMIUM to its path)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=path, args=ARGS, timeout=120_000)
        except sync_api.Error as exc:
            pytest.skip(f"{path} did not start: {str(exc).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory, report_scores):
    d = tmp_path_factory.mktemp("browser")
    scores, _ = report_scores
    args = ("--in", "in", "--ood", "ood", "--ood", "gated")
    run("report", scores, *args, "--out", d / "r.html", "--quiet")
    return d / "r.html", run_json("evaluate", scores, *args, "--ci", "0.95")


def _open(browser, page_file, width=1280):
    page = browser.new_page(viewport={"width": width, "height": 800})
    seen = {"console": [], "errors": [], "requests": []}
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    return page, seen


def test_loads_with_no_console_message_and_no_request(browser, report):
    page_file, _ = report
    page, seen = _open(browser, page_file)
    assert seen["console"] == [] and seen["errors"] == []
    assert seen["requests"] == [page_file.resolve().as_uri()]
    page.close()


def test_dom_holds_the_aurocs_of_evaluate_json(browser, report):
    page_file, evaluated = report
    page, _ = _open(browser, page_file)
    cells = page.eval_on_selector_all("tr[data-score] td[data-metric=auroc]", """cells => cells.map(c => [
        c.closest('tr').dataset.score, c.closest('tr').dataset.group, c.dataset.value,
        c.firstElementChild.textContent])""")
    shown = {(s, g): (float(v), text) for s, g, v, text in cells}
    expected = {(s, g): (m["auroc"], f"{m['auroc']:.3f}")
                for s, results in evaluated["by_score"].items() for g, m in results.items()}
    assert shown == expected and len(shown) == 2
    page.close()


def test_screenshot_is_not_blank_and_figures_have_size(browser, report):
    page, _ = _open(browser, report[0])
    heights = page.eval_on_selector_all("figure svg", "els => els.map(e => e.getBoundingClientRect().height)")
    assert len(heights) == 3 and min(heights) > 100
    pixels = np.asarray(Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 1000  # the whole page, not one screen
    assert (pixels < 200).mean() > 0.02 and pixels.std() > 20
    loaded = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert loaded and all(loaded)
    page.close()


def test_fits_a_laptop_screen_and_prints(browser, report):
    page, seen = _open(browser, report[0], width=1280)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    pdf = page.pdf(format="A4", print_background=True)
    assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page") >= 2
    assert seen["console"] == [] and len(seen["requests"]) == 1
    page.close()
