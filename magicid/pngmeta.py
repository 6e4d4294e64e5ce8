"""Generation parameters stored in the PNG itself (a text chunk named "magicid", JSON), so a picture explains itself."""

from __future__ import annotations

import io
import json
import os
from typing import BinaryIO

from PIL import Image, PngImagePlugin


CHUNK = "magicid"


def save_png(image: Image.Image, path_or_buffer: str | os.PathLike | BinaryIO, parameters: dict) -> None:
    """Save `image` as PNG with `parameters` (JSON-serialisable; other values are written with `str`)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK, json.dumps(parameters, default=str, sort_keys=True))
    image.save(path_or_buffer, format="PNG", pnginfo=info)


def read_parameters(image_or_path: Image.Image | str | os.PathLike | bytes) -> dict | None:
    """The parameters `save_png` stored, or None when the image has none (or they are not valid JSON)."""
    if isinstance(image_or_path, Image.Image):
        image = image_or_path
    else:
        image = Image.open(io.BytesIO(image_or_path) if isinstance(image_or_path, bytes) else image_or_path)
    text = (getattr(image, "text", None) or image.info).get(CHUNK)
    if text is None:
        return None
    try:
        parameters = json.loads(text)
    except json.JSONDecodeError:
        return None
    return parameters if isinstance(parameters, dict) else None
