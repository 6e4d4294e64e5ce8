"""Generation parameters travel inside the PNG."""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

from magicid.pngmeta import read_parameters, save_png


def test_round_trip_through_a_file_and_a_buffer(tmp_path):
    image = Image.new("RGB", (16, 16), "red")
    parameters = {"prompt": "two friends", "seed": 7, "identities": ["Ann", "Bo"], "scale": 0.5}
    save_png(image, tmp_path / "out.png", parameters)
    assert read_parameters(tmp_path / "out.png") == parameters
    buffer = io.BytesIO()
    save_png(image, buffer, parameters)
    assert read_parameters(buffer.getvalue()) == parameters
    assert read_parameters(Image.open(io.BytesIO(buffer.getvalue()))) == parameters


def test_images_without_parameters_give_none(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    assert read_parameters(tmp_path / "plain.png") is None
    info = PngImagePlugin.PngInfo()
    info.add_text("magicid", "{not json")
    Image.new("RGB", (8, 8)).save(tmp_path / "bad.png", pnginfo=info)
    assert read_parameters(tmp_path / "bad.png") is None


def test_values_that_are_not_json_are_written_as_text(tmp_path):
    save_png(Image.new("RGB", (8, 8)), tmp_path / "p.png", {"path": tmp_path})
    assert read_parameters(tmp_path / "p.png") == {"path": str(tmp_path)}
