"""Robust image loading: any user photo becomes an upright RGB `PIL.Image.Image`, or a one-line error."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from magicid.config import Limits
from magicid.errors import InvalidImageError


ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray


def load_image(source: ImageSource, limits: Limits | None = None) -> Image.Image:
    """Open `source` as an EXIF-upright RGB image within `limits`; raise `InvalidImageError` otherwise.

    The result carries the file name in `image.info["source"]` so later messages can name it.
    """
    limits = limits or Limits()
    name = _source_name(source)
    image = _open(source, name, limits)
    _check_pixels(image.size, name, limits)
    try:
        image = ImageOps.exif_transpose(image)
        image = to_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidImageError(f"{name} is corrupt or truncated ({error}): re-save it as JPEG or PNG") from error
    _check_min_side(image.size, name, limits)
    _check_aspect(image.size, name, limits)
    image.info["source"] = name
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha is composited on white, 16-bit and float are rescaled to 8-bit."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if image.mode == "P" or image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
        values = values / 65535.0 * 255.0 if values.max(initial=0) > 255 else values
    elif image.mode == "F" and values.max(initial=0) <= 1.0:
        values = values * 255.0
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def _source_name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    if isinstance(source, Image.Image):
        return source.info.get("source") or Path(getattr(source, "filename", "") or "the image").name
    return "the image"


def _open(source: ImageSource, name: str, limits: Limits) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, (str, os.PathLike)):
        if Path(source).is_dir():
            raise InvalidImageError(f"{name} is a folder: give the path of an image file")
        if not Path(source).is_file():
            raise InvalidImageError(f"{name} was not found: check the path")
        size = Path(source).stat().st_size
        if size > limits.max_upload_bytes:
            limit_mb = limits.max_upload_bytes // 2**20
            raise InvalidImageError(f"{name} is {size / 2**20:.0f} MB: upload a file under {limit_mb} MB")
        data = Path(source).read_bytes()
    else:
        data = bytes(source)
    return _decode(data, name, limits)


def _decode(data: bytes, name: str, limits: Limits) -> Image.Image:
    if not data:
        raise InvalidImageError(f"{name} is empty: upload a JPEG or PNG photo")
    try:
        image = Image.open(io.BytesIO(data))
        _check_pixels(image.size, name, limits)
        image.load()
    except Image.DecompressionBombError as error:
        megapixels = min(limits.max_image_pixels, Image.MAX_IMAGE_PIXELS or limits.max_image_pixels) // 1_000_000
        message = f"{name} has too many pixels: upload an image under {megapixels} megapixels"
        raise InvalidImageError(message) from error
    except UnidentifiedImageError as error:
        raise InvalidImageError(f"{name} is not an image Pillow can read: upload a JPEG, PNG or WebP photo") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidImageError(f"{name} is corrupt or truncated ({error}): re-save it as JPEG or PNG") from error
    return image


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"{name} has array shape {array.shape}: pass (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype != np.uint8:
        scale = 255.0 if array.dtype.kind == "f" and array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(np.rint(array.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def _check_pixels(size: tuple[int, int], name: str, limits: Limits) -> None:
    width, height = size
    if width * height > limits.max_image_pixels:
        raise InvalidImageError(
            f"{name} is {width}x{height} ({width * height / 1e6:.0f} megapixels): "
            f"upload an image under {limits.max_image_pixels // 1_000_000} megapixels"
        )


def _check_min_side(size: tuple[int, int], name: str, limits: Limits) -> None:
    if min(size) < limits.min_image_side:
        raise InvalidImageError(
            f"{name} is only {size[0]}x{size[1]} pixels: "
            f"upload an image at least {limits.min_image_side} px on each side"
        )


def _check_aspect(size: tuple[int, int], name: str, limits: Limits) -> None:
    if max(size) > limits.max_aspect_ratio * min(size):
        raise InvalidImageError(
            f"{name} is {size[0]}x{size[1]}, a strip rather than a photo: "
            f"upload an image at most {limits.max_aspect_ratio:g} times longer than wide"
        )
