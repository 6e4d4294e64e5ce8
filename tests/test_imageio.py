"""load_image: every kind of bad or unusual input gives an upright RGB image or its one-line message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from magicid.config import Limits
from magicid.errors import InvalidImageError
from magicid.imageio import load_image


PHOTO = "portraits/yang_mi/1.jpg"  # 443x443


@pytest.fixture(scope="module")
def photo(testdata) -> Image.Image:
    return Image.open(testdata / PHOTO).convert("RGB")


def _mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_real_photo_loads_as_rgb_with_its_name(testdata):
    image = load_image(testdata / PHOTO)
    assert image.mode == "RGB" and image.size == (443, 443)
    assert image.info["source"] == "1.jpg"


def test_bytes_array_and_pil_sources_agree(testdata, photo):
    from_bytes = load_image((testdata / PHOTO).read_bytes())
    from_array = load_image(np.asarray(photo))
    from_pil = load_image(photo)
    assert _mean_abs_difference(from_bytes, photo) == 0.0
    assert _mean_abs_difference(from_array, photo) == 0.0
    assert _mean_abs_difference(from_pil, photo) == 0.0


def test_exif_rotation_is_applied(tmp_path, photo):
    wide = photo.crop((0, 0, 443, 300))
    stored = wide.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.size == wide.size
    assert _mean_abs_difference(image, wide) < 6


def test_cmyk_jpeg_converts_to_rgb(tmp_path, photo):
    path = tmp_path / "cmyk.jpg"
    photo.convert("CMYK").save(path, quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == photo.size
    assert _mean_abs_difference(image, photo) < 12


def test_rgba_is_composited_on_white(tmp_path, photo):
    rgba = photo.convert("RGBA")
    alpha = np.full((photo.height, photo.width), 255, dtype=np.uint8)
    alpha[:, :100] = 0  # transparent left strip
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    image = np.asarray(load_image(path))
    assert image.shape == (443, 443, 3)
    assert np.all(image[:, :100] == 255)
    np.testing.assert_array_equal(image[:, 100:], np.asarray(photo)[:, 100:])


def test_sixteen_bit_grayscale_is_rescaled(tmp_path, photo):
    gray8 = np.asarray(photo.convert("L"), dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray8 * 257).save(path)  # 16-bit PNG
    assert Image.open(path).mode.startswith("I")
    image = np.asarray(load_image(path), dtype=np.int32)
    assert np.abs(image[:, :, 0] - gray8).max() <= 1
    assert np.all(image[:, :, 0] == image[:, :, 2])


def test_palette_and_grayscale_convert(photo):
    assert load_image(photo.convert("P")).mode == "RGB"
    assert load_image(photo.convert("L")).mode == "RGB"


def test_corrupt_file_is_refused(tmp_path, testdata):
    data = (testdata / PHOTO).read_bytes()
    path = tmp_path / "broken.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(InvalidImageError, match=r"^broken.jpg is corrupt or truncated"):
        load_image(path)


def test_text_file_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(InvalidImageError, match=r"^notes.jpg is not an image Pillow can read: upload a JPEG"):
        load_image(path)


def test_missing_and_empty_files_are_refused(tmp_path):
    with pytest.raises(InvalidImageError, match=r"^nowhere.jpg was not found"):
        load_image(tmp_path / "nowhere.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"^empty.png is empty"):
        load_image(tmp_path / "empty.png")


def test_too_many_pixels_is_refused(testdata):
    with pytest.raises(InvalidImageError, match=r"^1.jpg is 443x443 .*: upload an image under 0 megapixels"):
        load_image(testdata / PHOTO, Limits(max_image_pixels=100_000))


def test_pillow_decompression_bomb_is_refused(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (400, 400)).save(buffer, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow's bomb error fires above 2x this
    with pytest.raises(InvalidImageError, match=r"^the image has too many pixels"):
        load_image(buffer.getvalue(), Limits(max_image_pixels=10**9))


def test_tiny_image_is_refused(photo):
    tiny = photo.resize((20, 24))
    tiny.info["source"] = "thumb.png"
    with pytest.raises(InvalidImageError, match=r"^thumb.png is only 20x24 pixels: upload an image at least 32 px"):
        load_image(tiny)


def test_oversized_upload_is_refused(tmp_path, testdata):
    path = tmp_path / "big.jpg"
    path.write_bytes((testdata / PHOTO).read_bytes())
    with pytest.raises(InvalidImageError, match=r"^big.jpg is 0 MB: upload a file under 0 MB"):
        load_image(path, Limits(max_upload_bytes=1000))
