"""The explorer end to end in headless Chromium (Debian's chromium driven by Playwright):
browse a store, overlay a map, read curves and the sorted metric table, open a report
section, upload an image and see its explanation, and meet the size, type and traversal
limits from the browser's side."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the explorer needs the extra cnnlens[serve]")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")

from PIL import Image  # noqa: E402

from explorer_helpers import (  # noqa: E402
    SECRET,
    chromium_browser,
    make_run,
    make_store,
    png_bytes,
    served,
)

pytestmark = pytest.mark.slow

LIMIT_MB = 0.2
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    from cnnlens.server import create_app

    root = tmp_path_factory.mktemp("explorer-browser")
    store = make_store(root, make_run(root))
    (store / "leak.txt").symlink_to(root / "secret.txt")
    app = create_app(store, max_upload_mb=LIMIT_MB)
    with served(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as chromium:
        yield chromium


@pytest.fixture
def page(browser, base_url):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base_url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def _loaded(page, selector: str) -> None:
    page.wait_for_function(
        "s => { const imgs = document.querySelectorAll(s + ' img');"
        " return imgs.length > 0 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector,
    )


def _only(page, fieldset: str, methods: list[str]) -> None:
    for box in page.locator(f"{fieldset} input").all():
        box.set_checked(box.get_attribute("value") in methods)


def test_overlay_renders_and_follows_the_slider(page):
    page.click('.thumb[data-index="9"]')
    assert page.text_content("#image-title").startswith("Image #9:")
    _only(page, "#methods", ["grad-cam"])
    viewer = '.viewer[data-method="grad-cam"]'
    page.wait_for_selector(viewer + ".ready")
    _loaded(page, viewer)
    stack = page.locator(viewer + " .stack")
    page.locator("#opacity").fill("0")
    plain = _pixels(stack.screenshot())
    page.locator("#opacity").fill("100")
    assert page.eval_on_selector(viewer + " img.overlay", "i => getComputedStyle(i).opacity") == "1"
    shown = _pixels(stack.screenshot())
    assert shown.std() > 10, "the overlay region is blank"
    assert np.abs(shown - plain).mean() > 5, "the map does not change what is shown"


def test_curves_and_sortable_metric_table(page):
    page.click('.thumb[data-index="2"]')
    _only(page, "#methods", ["grad-cam", "saliency"])
    for metric in ("deletion", "insertion"):
        page.wait_for_selector(
            f'#curves svg[data-metric="{metric}"] polyline[data-method="saliency"]'
        )
        assert page.locator(f'#curves svg[data-metric="{metric}"] polyline').count() == 2
    header = page.locator('#metrics-table th[data-key="deletion"]')
    column = "#metrics-table tbody td:nth-child(2)"
    header.click()
    up = [float(v) for v in page.locator(column).all_text_contents()]
    header.click()
    down = [float(v) for v in page.locator(column).all_text_contents()]
    assert len(up) == 2 and up == sorted(up) and down == sorted(up, reverse=True)
    rows = page.locator("#image-metrics-table tbody tr")
    assert rows.count() == 2  # this image's own values, one row per method


def test_overlapping_renders_draw_each_curve_once(page):
    """A slow curve request that answers after a newer one must not draw (no double curves)."""
    page.evaluate(
        """() => {
        const plain = window.fetch;
        let calls = 0;
        window.fetch = (url, options) => {
          const slow = String(url).includes("/api/curves/") && calls++ === 0;
          const wait = new Promise((done) => setTimeout(done, slow ? 1500 : 0));
          return wait.then(() => plain(url, options));
        };
      }"""
    )
    page.click('.thumb[data-index="9"]')  # this request answers last
    _only(page, "#methods", ["grad-cam", "saliency"])
    page.click('.thumb[data-index="2"]')
    page.wait_for_selector('#curves svg[data-metric="deletion"] polyline[data-method="grad-cam"]')
    page.wait_for_timeout(2500)  # past the slow answer
    for metric in ("deletion", "insertion"):
        assert page.locator(f'#curves svg[data-metric="{metric}"] polyline').count() == 2
    assert page.locator('#curves svg[data-metric="deletion"]').count() == 1


def test_report_section_opens(page):
    page.select_option("#report-sections", "overview")
    assert page.get_attribute("#report-frame", "src").endswith("#overview")
    heading = page.frame_locator("#report-frame").locator("#overview h2")
    assert heading.text_content() == "Model and data"


def test_upload_is_explained_in_the_page(page, tmp_path):
    from cnnlens.data import load

    raw = load("shapes", split="test").raw_batch([30])[0]
    path = tmp_path / "shape.png"
    path.write_bytes(png_bytes((raw.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)))
    page.set_input_files("#upload-file", str(path))
    _only(page, "#upload-methods", ["grad-cam", "integrated-gradients"])
    page.click("#upload-go")
    result = "#upload-result .viewer"
    page.wait_for_selector(result + '[data-method="integrated-gradients"]')
    _loaded(page, "#upload-result")
    assert page.locator(result).count() == 2 and page.is_hidden("#upload-error")
    assert page.text_content("#upload-result .top").startswith("Predicted ")
    page.locator("#opacity").fill("100")
    shown = _pixels(page.locator(result + '[data-method="grad-cam"] .stack').screenshot())
    assert shown.std() > 10


def test_upload_limits_from_the_browser(page, tmp_path):
    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)))
    page.set_input_files("#upload-file", str(big))
    page.click("#upload-go")
    page.wait_for_selector("#upload-error:not([hidden])")
    assert f"the limit is {LIMIT_MB} MB" in page.text_content("#upload-error")
    # the server's own limit, for a client that does not check first
    status = page.evaluate(
        "async () => { const f = new FormData();"
        " f.append('image', new Blob([new Uint8Array(400000)]), 'x.png');"
        " return (await fetch('/api/explain', {method: 'POST', body: f})).status; }"
    )
    assert status == 413
    fake = tmp_path / "fake.png"
    fake.write_text("<script>alert(1)</script>")
    page.set_input_files("#upload-file", str(fake))
    page.click("#upload-go")
    page.wait_for_function(
        "() => document.getElementById('upload-error').textContent.includes('not a PNG or JPEG')"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/files/leak.txt",
        "/files/..%2f..%2fsecret.txt",
        "/files/%2e%2e/%2e%2e/secret.txt",
        "/files/%252e%252e%252fsecret.txt",
        "/files/%2Fetc%2Fpasswd",
    ],
)
def test_traversal_from_the_browser(browser, base_url, path):
    page = browser.new_page()
    try:
        response = page.goto(base_url + path)
        assert response.status in (403, 404), (path, response.status)
        body = page.content()
        assert SECRET not in body and "root:x:" not in body
    finally:
        page.close()
