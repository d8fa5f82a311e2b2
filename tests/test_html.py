"""index.html, opened in a real browser (headless Chromium driven by Playwright): no console errors,
the leaderboard lists the expected methods in the expected order, every figure exists and loads,
tables sort by column, and a screenshot is written."""
import os
import shutil

import pytest

from bench.cli import main
from _stores import make_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Separations of the synthetic scores: the AUC order is advae > e-advae > lof > ocsvm > pca on
# every dataset.
SEPARATION = {"advae": 4.0, "e-advae": 2.5, "lof": 1.5, "ocsvm": 0.8, "pca": 0.0}
DATASETS = ("letter", "cardio", "satellite")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "results"
    make_store(out, {(m, d): s for m, s in SEPARATION.items() for d in DATASETS}, seeds=(0, 1, 2))
    assert main(["report", "--out", str(out)]) == 0
    return out


def test_page_is_self_contained_and_names_its_context(report_dir):
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    for needle in ("http://", "https://", "//cdn", "<link "):
        assert needle not in page, needle
    for needle in ('id="leaderboard-auc"', "Reproduction of wang2020-kbs", "table-f1",
                   "small-multiples.png", "cd-auc.png", "threshold policy", "kde", "seeds",
                   "0, 1, 2", "library versions", "commit"):
        assert needle in page, needle


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs the Debian package chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Debian's Chromium, never a browser download; Playwright gives it a fresh user-data-dir.
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS[1:])
        yield b
        b.close()


def test_page_in_a_browser(report_dir, browser):
    page = browser.new_page(viewport={"width": 1366, "height": 768})  # a laptop screen
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.goto((report_dir / "index.html").as_uri())
    page.wait_for_load_state("load")
    # lazy images: scroll through the page so every figure is fetched
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=15000)
    assert problems == []

    names = page.eval_on_selector_all("#leaderboard-auc tbody tr td:first-child",
                                      "cells => cells.map(c => c.textContent)")
    assert names == ["advae", "e-advae", "lof", "ocsvm", "pca"]
    ranks = page.eval_on_selector_all("#leaderboard-auc tbody tr td:nth-child(6)",
                                      "cells => cells.map(c => c.textContent)")
    assert ranks == ["1.00", "2.00", "3.00", "4.00", "5.00"]

    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])")
    assert len(images) >= 3 + 2 * 3 + 1 + 4  # CD + Wilcoxon per metric, curves, small multiples
    for src, width in images:
        assert (report_dir / src).is_file(), src
        assert width > 100, f"{src} did not load"

    # sortable: a click on the AUC table's "letter" header sorts ascending, a second descending
    header = page.locator("#table-auc thead th", has_text="letter")
    header.click()
    first = page.eval_on_selector("#table-auc tbody tr td", "c => c.textContent")
    assert first == "pca"
    header.click()
    assert page.eval_on_selector("#table-auc tbody tr td", "c => c.textContent") == "advae"

    page.evaluate("window.scrollTo(0, 0)")
    shot = report_dir / "index-screenshot.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    page.close()
