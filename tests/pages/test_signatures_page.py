"""The signatures page in a real browser: compare (anyone), then add a signer, enrol
references and verify (staff), with the real default encoder. (No ORM inside the browser
block: Playwright's sync API runs an event loop there; the page's own API answers are read.)"""

from __future__ import annotations

import pytest

from tests.pages.conftest import NEEDS_CHROMIUM, log_in, wait_for
from tests.signatures.conftest import real_or_synthetic

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def staff(django_user_model):
    django_user_model.objects.create_superuser("clerk", password="s3cret-pass")
    return "clerk", "s3cret-pass"


def files(tmp_path, writer: int, count: int, *, forged: bool = False) -> list[str]:
    paths = []
    for i, data in enumerate(real_or_synthetic(writer, count, forged=forged)):
        extension = "jpg" if data.startswith(b"\xff\xd8") else "png"
        path = tmp_path / f"w{writer}-{'f' if forged else 'g'}{i}.{extension}"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def test_compare_enrol_and_verify(live_server, staff, browser_page, tmp_path, screenshots):
    page = browser_page
    genuine = files(tmp_path, 1, 5)
    page.goto(live_server.url + "/signatures/")
    assert page.locator("#enrol-form").count() == 0  # anonymous: no write controls
    page.set_input_files("#image1", genuine[0])
    page.set_input_files("#image2", genuine[0])
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-result:not([hidden])")
    assert page.inner_text("#compare-verdict") == "Matched"
    wait_for(page, "img => img.complete", arg=page.locator("#preview1").element_handle(), timeout=15_000)
    assert page.locator("#preview1").evaluate("img => img.complete && img.naturalWidth") == 220
    (tmp_path / "notes.png").write_bytes(b"not an image")
    page.set_input_files("#image2", str(tmp_path / "notes.png"))
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-status.error")
    assert "image2" in page.inner_text("#compare-status") or "not a PNG" in page.inner_text("#compare-status")

    log_in(page, live_server.url, *staff, "/signatures/")
    page.fill("#signer-name", "Ada Lovelace")
    page.fill("#signer-external", "C-1")
    page.click("#signer-form button[type=submit]")
    page.wait_for_selector("#signer-panel:not([hidden])")
    page.set_input_files("#enrol-files", genuine[:3])
    page.click("#enrol-form button[type=submit]")
    wait_for(page, "document.querySelectorAll('#references img').length === 3")
    assert "3 reference(s) enrolled" in page.inner_text("#signer-status")
    signers = page.evaluate("fetch('/api/v1/signatures/signers/').then(r => r.json())")["results"]
    assert [(s["external_id"], s["references"]) for s in signers] == [("C-1", 3)]

    page.set_input_files("#verify-file", genuine[4])
    page.click("#verify-form button[type=submit]")
    page.wait_for_selector("#verify-result:not([hidden])")
    assert page.inner_text("#verify-decision") in ("Genuine", "Forged")
    assert page.locator("#verify-rows tr").count() == 3
    score = float(page.inner_text("#verify-score"))
    rows = [float(cell) for cell in page.locator("#verify-rows tr td:nth-child(2)").all_inner_texts()]
    assert score == max(rows) and 0 < score <= 1
    # The decision explained: what decided, the closest reference and the overlay as the model saw them.
    assert "Decided by the best similarity to a reference at the equal-error point" in page.inner_text("#verify-basis")
    for image in ("#verify-closest", "#verify-overlay"):
        wait_for(page, "img => img.complete && img.naturalWidth === 220", arg=page.locator(image).element_handle())
    assert "Closest reference #" in page.inner_text("#verify-closest-caption")
    assert "consistency" in page.inner_text("#references")
    assert page.locator("[data-activate]").count() >= 1  # staff may switch encoders
    assert "3 references" in page.locator("#signer option:checked").inner_text()
    page.set_input_files("#image1", genuine[0])
    page.set_input_files("#image2", genuine[1])
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-result:not([hidden])")
    assert page.locator("body").evaluate("b => b.scrollWidth <= window.innerWidth")  # no sideways scrolling
    screenshots(page, "signatures")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.locator("body").evaluate("b => document.documentElement.scrollWidth <= 390")
