"""A corpus of bad input, made in the test: files that are not images or are images no one should upload, and
layouts crafted to break the parser or take the machine down. Each is something a hostile but fair user could send."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def bad_images(folder: Path, portrait: Path) -> dict[str, Path]:
    """name -> file, made from `portrait`, a real photo of one face."""
    folder.mkdir(parents=True, exist_ok=True)
    face = Image.open(portrait).convert("RGB")
    files = {
        "not_an_image.jpg": b"this is a text file with a .jpg name\n",
        "truncated.jpg": _jpeg(face)[: len(_jpeg(face)) // 3],
        "empty.png": b"",
        "one_pixel.png": _png(Image.new("RGB", (1, 1), (200, 150, 120))),
        "thin_strip.png": _png(Image.new("RGB", (3000, 32), (120, 120, 120))),
        "narrow_strip.png": _png(Image.new("RGB", (1200, 100), (120, 120, 120))),
        "very_thin_strip.png": _png(Image.new("RGB", (100000, 40), (120, 120, 120))),
        "bomb.png": _png_header_bomb(40_000, 40_000),
        "cmyk.jpg": _jpeg(face.convert("CMYK")),
        "sixteen_bit.png": _png(Image.fromarray((np.asarray(face.convert("L"), np.uint16) * 257), mode="I;16")),
        "float.tiff": _tiff(Image.fromarray(np.asarray(face.convert("L"), np.float32) / 255.0, mode="F")),
        "photo.heic": b"\x00\x00\x00\x18ftypheic" + bytes(range(256)) * 4,
        "exif_rotated.jpg": _jpeg(face.rotate(90, expand=True), orientation=6),
        "no_face.png": _png(Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1)))),
        "thirty_faces.jpg": _jpeg(_tiled(face, 30)),
    }
    paths = {}
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    return paths


def hostile_layouts(repo_file: Path) -> dict[str, str]:
    """name -> JSON text (or text that is not JSON)."""
    person = {"keypoints": [[0.5, 0.3, 1.0]] * 18, "identity": 0}

    def layout(**changes) -> str:
        return json.dumps({"width": 512, "height": 512, "people": [person], **changes})

    def with_person(**changes) -> str:
        return json.dumps({"width": 512, "height": 512, "people": [{**person, **changes}]})

    return {
        "server_path": "/etc/passwd",
        "relative_path": "../../../../etc/passwd",
        "repo_file": str(repo_file),
        "proc_environ": "/proc/self/environ",
        "not_json": "{not json",
        "json_list": "[1, 2, 3]",
        "json_string": '"hello"',
        "huge_identity": with_person(identity=1_000_000_000),
        "fractional_identity": with_person(identity=0.7),
        "negative_identity": with_person(identity=-1),
        "string_identity": with_person(identity="root"),
        "huge_canvas": layout(width=30000, height=30000),
        "tiny_canvas": layout(width=9, height=9),
        "zero_canvas": layout(width=0, height=512),
        "string_canvas": layout(width="root:x:0:0", height=512),
        "bool_canvas": layout(width=True, height=512),
        "float_canvas": layout(width=512.5, height=512),
        "infinite_canvas": '{"width": 1e999, "height": 512, "people": []}',
        "nan_coordinate": with_person(keypoints=[[float("nan"), 0.3, 1.0]] * 18),
        "infinite_coordinate": '{"width": 512, "height": 512, "people": [{"keypoints": [[1e999, 0.3, 1]]}]}',
        "far_coordinate": with_person(keypoints=[[1e30, 0.3, 1.0]] * 18),
        "string_coordinates": with_person(keypoints=[["root:x", 0.3, 1.0]] * 18),
        "short_keypoints": with_person(keypoints=[[0.5, 0.3, 1.0]] * 3),
        "ragged_keypoints": with_person(keypoints=[[0.5, 0.3, 1.0], [0.5]] * 9),
        "too_many_people": json.dumps({"width": 512, "height": 512, "people": [person] * 10_000}),
        "too_many_landmarks": with_person(face_landmarks=[[0.5, 0.3]] * 100_000),
        "bad_face_box": with_person(face_box=[0.6, 0.6, 0.4, 0.4]),
        "people_not_list": layout(people={"a": 1}),
        "person_not_dict": layout(people=[1, 2]),
        "deep_nesting": '{"width": 512, "height": 512, "people": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "long_integer": '{"width": ' + "9" * 10_000 + ', "height": 512, "people": []}',
        "not_utf8": "\udcff",  # written as the raw byte 0xff by `write_layout`
        "big_file": layout(padding="x" * (3 * 2**20)),
    }


def write_layout(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.json"
    path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    return path


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def _tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")
    return buffer.getvalue()


def _png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims `width` x `height` pixels (a decompression bomb's signature)."""
    data = bytearray(_png(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _tiled(photo: Image.Image, count: int) -> Image.Image:
    """`count` copies of `photo` in a grid: many faces in one image."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    tile = photo.resize((200, int(200 * photo.height / photo.width)))
    sheet = Image.new("RGB", (tile.width * columns, tile.height * rows), (255, 255, 255))
    for index in range(count):
        sheet.paste(tile, ((index % columns) * tile.width, (index // columns) * tile.height))
    return sheet
