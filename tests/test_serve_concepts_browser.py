"""The explorer's concept view in headless Chromium (Debian's chromium driven by
Playwright), as tests/test_serve_browser.py drives the rest of the page: click an image,
see its top concepts at the chosen layer with their conditional heatmaps and reference
crops; on a model LRP has no rule for, the view says why."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the explorer needs the extra cnnlens[serve]")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")

from PIL import Image  # noqa: E402

from explorer_helpers import chromium_browser, make_run, served, squared_spec  # noqa: E402

pytestmark = pytest.mark.slow

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("explorer-concepts-browser")


@pytest.fixture(scope="module")
def run_url(root):
    from cnnlens.server import create_app

    with served(create_app(make_run(root), images=12)) as url:
        yield url


@pytest.fixture(scope="module")
def squared_url(root):
    from cnnlens.server import create_app

    app = create_app(None, model=squared_spec(root), data="shapes", images=6)
    with served(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready=true]")
    return page


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def _settled(page) -> str:
    page.wait_for_function(
        "() => ['ready', 'failed'].includes(document.getElementById('concepts').dataset.state)"
    )
    return page.get_attribute("#concepts", "data-state")


def _loaded(page, selector: str) -> None:
    page.wait_for_function(
        "s => { const imgs = document.querySelectorAll(s + ' img');"
        " return imgs.length > 0 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector,
    )


def test_click_an_image_and_see_its_concepts(browser, run_url):
    page = _open(browser, run_url)
    try:
        assert page.input_value("#concept-layer") == "layer3"
        page.click('.thumb[data-index="7"]')
        page.wait_for_function(
            "() => document.getElementById('concept-note').textContent.includes('layer3')"
            " && document.getElementById('concepts').dataset.state === 'ready'"
        )
        _loaded(page, "#concepts")
        cards = page.locator('.concept:not([data-channel="all"])')
        assert cards.count() == 4 and page.is_hidden("#concept-error")
        captions = page.locator(".concept .caption").all_text_contents()
        assert captions[0].startswith("LRP for ") and captions[1].startswith("channel #")
        first = cards.nth(0)
        assert first.locator(".crops img").count() == 4
        page.locator("#opacity").fill("0")
        plain = _pixels(first.locator(".stack").screenshot())
        page.locator("#opacity").fill("100")
        shown = _pixels(first.locator(".stack").screenshot())
        assert np.abs(shown - plain).mean() > 5, "the conditional heatmap changes nothing shown"

        channels = [c.get_attribute("data-channel") for c in cards.all()]
        page.select_option("#concept-layer", "layer1")
        page.select_option("#concept-top", "2")
        page.wait_for_function(
            "() => document.getElementById('concept-note').textContent.includes('layer1')"
            " && document.getElementById('concepts').dataset.state === 'ready'"
        )
        _loaded(page, "#concepts")
        assert page.locator('.concept:not([data-channel="all"])').count() == 2
        assert "of 16)" in page.text_content("#concept-note")  # layer1 has 16 channels
        assert channels != [c.get_attribute("data-channel") for c in cards.all()]
        if os.environ.get("CNNLENS_SCREENSHOT"):  # for a person to look at, not checked
            page.locator("#concepts-section").screenshot(path=os.environ["CNNLENS_SCREENSHOT"])
    finally:
        page.close()


def test_a_model_lrp_cannot_explain_gets_a_message_in_the_view(browser, squared_url):
    page = _open(browser, squared_url)
    try:
        page.click('.thumb[data-index="2"]')
        assert _settled(page) == "failed"
        message = page.text_content("#concept-error")
        assert page.is_visible("#concept-error") and "LRP" in message
        assert page.locator(".concept").count() == 0
    finally:
        page.close()
