"""The app in a real browser (Debian's chromium via Playwright) over the tiny profile's real engine.

Screenshots go to test-artifacts/ (kept by CI as artifacts).
"""

from __future__ import annotations

import io
import re
import urllib.request

import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from serving import serve


GENERATE_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def app_url():
    from app import Settings, create_app
    from magicid.engine import MagicID

    demo = create_app(MagicID.from_profile("tiny"), Settings(max_images=2))
    url = serve(demo)
    yield url
    demo.close()


def _open(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#banner")).to_contain_text("tiny", timeout=60_000)


def _set_number(page: Page, elem_id: str, value: int, attempts: int = 3) -> None:
    """Type `value` into a number field until it sticks: under load, an accordion that is still opening
    re-renders its fields and drops what was typed before it settled."""
    field = page.locator(f"#{elem_id} input[type=number]")
    expect(field).to_be_visible()
    for _ in range(attempts):
        field.fill(str(value))
        field.press("Enter")
        field.blur()  # Gradio takes the value on change/blur; under load a click may otherwise come first
        try:
            expect(field).to_have_value(str(value), timeout=3_000)
            return
        except AssertionError:
            continue
    expect(field).to_have_value(str(value))


def test_page_loads_with_the_profile_banner(page: Page, app_url, artifacts):
    _open(page, app_url)
    expect(page.locator("#banner")).to_contain_text("not photographs")
    expect(page.locator("#banner")).not_to_contain_text("--profile")  # no command-line advice in the web UI
    expect(page.locator("#layout-canvas svg image")).to_have_count(1)
    expect(page.locator("#layout-canvas circle").first).to_be_visible()
    expect(page.get_by_role("tab", name="Restore faces")).to_be_visible()
    page.screenshot(path=artifacts / "01-loaded.png", full_page=True)


def test_upload_identity_generate_and_see_results(page: Page, browser, app_url, testdata, artifacts, tmp_path):
    _open(page, app_url)
    page.locator("#person-1-name :is(input, textarea)").fill("Barack")  # the card's name labels the canvas
    expect(page.locator('#layout-canvas rect[data-person="0"] title')).to_contain_text("Barack", timeout=30_000)
    page.locator("#person-1-photos input[type=file]").set_input_files(str(testdata / "portraits" / "barack_obama" / "1.jpg"))
    expect(page.locator("#person-1-status")).to_contain_text("Face found", timeout=GENERATE_TIMEOUT_MS)
    page.locator("#prompt textarea").fill("a man in a suit, studio portrait")
    page.get_by_text("Settings", exact=True).first.click()
    _set_number(page, "steps", 2)
    page.screenshot(path=artifacts / "02-identity-uploaded.png", full_page=True)
    page.locator("#generate-button").click()
    expect(page.locator("#results img").first).to_be_visible(timeout=GENERATE_TIMEOUT_MS)
    page.get_by_role("button", name=re.compile("How it was made")).click()
    expect(page.locator("#debug img").first).to_be_visible(timeout=10_000)
    expect(page.locator("#identity-check")).to_contain_text("Barack", timeout=10_000)  # a labelled box per person
    expect(page.locator("#fix-person-1")).to_contain_text("Fix Barack's face")  # the tiny model draws no face
    page.screenshot(path=artifacts / "03-generated.png", full_page=True)
    page.locator("#fix-faces-button").click()  # the tiny model draws no real face: nothing to re-denoise, it says so
    expect(page.locator("#messages")).to_contain_text("Image 1: Barack: no face overlaps their region", timeout=60_000)
    page.screenshot(path=artifacts / "03b-fix-faces.png", full_page=True)
    source = page.locator("#results img").first.get_attribute("src")
    with urllib.request.urlopen(source if source.startswith("http") else app_url.rstrip("/") + source) as response:
        png = Image.open(io.BytesIO(response.read()))
    assert png.format == "PNG" and '"steps": 2' in png.info.get("magicid", "")
    # the downloaded PNG fills the controls back in
    saved = tmp_path / "result.png"
    png.save(saved, pnginfo=_text_chunks(png))
    page.locator("#prompt textarea").fill("something else")
    page.get_by_role("button", name=re.compile("Reuse settings from a PNG")).click()
    page.locator("#parameters-png input[type=file]").set_input_files(str(saved))
    expect(page.locator("#prompt textarea")).to_have_value("a man in a suit, studio portrait", timeout=30_000)
    expect(page.locator("#steps input[type=number]")).to_have_value("2")
    # another visitor (a fresh browser session) sees none of this session's photos or results
    other = browser.new_context().new_page()
    _open(other, app_url)
    expect(other.locator("#person-1-status")).to_contain_text("Upload one or more photos")
    expect(other.locator("#results img")).to_have_count(0)
    other.context.close()


def _text_chunks(image: Image.Image):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in image.info.items():
        if isinstance(value, str):
            info.add_text(key, value)
    return info


def test_layout_editor_drags_joints_and_people(page: Page, app_url, testdata, artifacts):
    _open(page, app_url)
    _set_number(page, "num-people", 2)
    expect(page.locator("#person-2-name")).to_be_visible()
    expect(page.locator("#layout-status")).to_contain_text("2 people", timeout=30_000)
    _drag(page, '#layout-canvas circle[data-person="0"][data-joint="4"]', 10, -150)
    expect(page.locator("#layout-status")).to_contain_text("Moved the right wrist of Person 1", timeout=30_000)
    page.locator("#layout-undo").click()
    expect(page.locator("#layout-status")).to_contain_text("Undone", timeout=30_000)
    _drag(page, '#layout-canvas rect[data-person="1"]', -40, 30, at_top=True)  # by its label, above the head
    expect(page.locator("#layout-status")).to_contain_text("Moved Person 2", timeout=30_000)
    _drag(page, '#layout-canvas rect[data-person="0"]', 0, 0, at_top=True)  # a click without moving selects
    expect(page.locator("#layout-status")).to_contain_text("Person 1 selected", timeout=30_000)
    page.locator("#layout-remove").click()  # removing Person 1's figure renames nobody
    expect(page.locator('#layout-canvas rect[data-kind="face"]')).to_have_count(1, timeout=30_000)
    expect(page.locator('#layout-canvas rect[data-kind="face"] title')).to_contain_text("Person 2")
    page.screenshot(path=artifacts / "06-layout-edited.png", full_page=True)
    page.get_by_text("a family of four on a beach at sunset, full body").click()  # an example fills the editor
    expect(page.locator("#person-4-name")).to_be_visible(timeout=30_000)
    expect(page.locator('#layout-canvas rect[data-kind="face"]')).to_have_count(4, timeout=30_000)
    expect(page.locator("#prompt textarea")).to_have_value("a family of four on a beach at sunset, full body")
    page.screenshot(path=artifacts / "07-example-loaded.png", full_page=True)
    page.get_by_role("button", name=re.compile("Poses from a photo")).click()
    page.locator("#pose-photo input[type=file]").set_input_files(str(testdata / "group" / "voc_three_friends.jpg"))
    page.locator("#extract-poses").click()
    expect(page.locator("#layout-status")).to_contain_text("Found 3 people", timeout=GENERATE_TIMEOUT_MS)
    expect(page.locator('#layout-canvas rect[data-kind="face"]')).to_have_count(3)


def _drag(page: Page, selector: str, dx: float, dy: float, at_top: bool = False) -> None:
    handle = page.locator(selector)
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + (4 if at_top else box["height"] / 2)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=6)
    page.mouse.up()


def test_restore_tab_shows_before_and_after(page: Page, app_url, testdata, artifacts, tmp_path):
    """Obama and Biden with faces of about 80 px and one reference, Obama's: his face is restored, Biden's left."""
    from PIL import Image

    pair = Image.open(testdata / "group" / "obama_biden_standing.jpg").convert("RGB")
    small = tmp_path / "pair.jpg"
    pair.resize((pair.width * 2 // 5, pair.height * 2 // 5)).save(small)
    _open(page, app_url)
    page.get_by_role("tab", name="Restore faces").click()
    page.locator("#restore-image input[type=file]").set_input_files(str(small))
    page.locator("#restore-references input[type=file]").set_input_files(str(testdata / "portraits" / "barack_obama" / "1.jpg"))
    _set_number(page, "restore-steps", 2)
    page.locator("#restore-button").click()
    expect(page.locator("#restore-messages")).to_contain_text("Restored face", timeout=GENERATE_TIMEOUT_MS)
    expect(page.locator("#restore-messages")).to_contain_text("left as it is")
    expect(page.locator("#restore-result img").first).to_be_visible()
    expect(page.locator("#restore-debug img").first).to_be_visible()
    page.screenshot(path=artifacts / "08-restored.png", full_page=True)
    page.locator("#restore-who textarea, #restore-who input").first.fill("off, off")  # the user decides who is who
    page.locator("#restore-button").click()
    expect(page.locator("#restore-messages")).to_contain_text("Every face was switched off", timeout=GENERATE_TIMEOUT_MS)


def test_corrupt_upload_shows_an_error_not_a_crash(page: Page, app_url, artifacts):
    _open(page, app_url)
    corrupt = {"name": "corrupt.jpg", "mimeType": "image/jpeg", "buffer": b"\xff\xd8\xff\xe0 not a jpeg at all"}
    page.locator("#person-1-photos input[type=file]").set_input_files(corrupt)
    expect(page.locator("#person-1-status")).to_contain_text(re.compile("corrupt.jpg"), timeout=60_000)
    expect(page.locator("#person-1-status")).to_contain_text("⚠")
    page.screenshot(path=artifacts / "04-corrupt-upload.png", full_page=True)
    page.locator("#generate-button").click()  # the app still answers: it explains what is missing
    alert = page.locator("#generate-alert")
    expect(alert).to_contain_text("has no usable photo", timeout=30_000)
    page.wait_for_timeout(6_000)  # a toast would have faded by now; the alert stays until dismissed
    expect(alert).to_be_visible()
    expect(page.locator("#results").get_by_text("Error")).to_have_count(0)
    page.screenshot(path=artifacts / "05-generate-without-identity.png", full_page=True)
    page.locator("#generate-alert-dismiss").click()
    expect(alert).to_be_hidden(timeout=10_000)
