"""`python -m magicid generate` through `magicid.cli.main`: success paths, and bad inputs as one-line errors."""

from __future__ import annotations

import pytest
from PIL import Image

from magicid import cli
from magicid.layout import Layout
from magicid.pngmeta import read_parameters


@pytest.fixture(autouse=True)
def only_generate(monkeypatch):
    """Parse with this command alone, so the test does not depend on the other commands' modules."""
    monkeypatch.setattr(cli, "COMMANDS", ("generate",))


@pytest.fixture(scope="module")
def obama(testdata) -> str:
    return str(testdata / "portraits/barack_obama/1.jpg")


def generate(*args: str) -> int:
    return cli.main(["generate", "--prompt", "a portrait", "--steps", "1", "--no-restore", *args])


def assert_one_line_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in error_lines[0]


def test_portrait_is_written_with_its_parameters(obama, tmp_path, capsys):
    out = tmp_path / "portrait.png"
    assert generate("--id", obama, "--name", "Barack", "--seed", "5", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out
    assert "miniature UNTRAINED model" in captured.err
    parameters = read_parameters(out)
    assert parameters["prompt"] == "a portrait" and parameters["seed"] == 5 and parameters["steps"] == 1
    assert parameters["identities"] == ["Barack"] and parameters["profile"] == "tiny"
    assert Image.open(out).size == (512, 512)


def test_several_ids_with_a_saved_layout(obama, testdata, tmp_path, capsys):
    layout_file = tmp_path / "layout.json"
    Layout.from_template("standing", 2, 768, 512).to_json(layout_file)
    biden = str(testdata / "portraits/joe_biden/1.jpg")
    out = tmp_path / "group.png"
    code = generate("--id", obama, "--id", biden, "--skeleton", str(layout_file), "--out", str(out),
                    "--num-images", "2", "--debug-dir", str(tmp_path / "debug"))  # fmt: skip
    assert code == 0
    assert [Image.open(tmp_path / name).size for name in ("group-1.png", "group-2.png")] == [(768, 512)] * 2
    assert len(list((tmp_path / "debug").glob("*.png"))) >= 2
    assert read_parameters(tmp_path / "group-2.png")["layout"]["width"] == 768


def test_pose_photo_gives_the_layout(obama, testdata, tmp_path, capsys):
    out = tmp_path / "posed.png"
    assert generate("--id", obama, "--pose", str(testdata / "pose/skier.jpg"), "--out", str(out)) == 0
    assert read_parameters(out)["layout"]["people"]


def test_id_photo_without_a_face(tmp_path, capsys):
    blank = tmp_path / "wall.jpg"
    Image.new("RGB", (320, 240), (90, 90, 90)).save(blank)
    assert generate("--id", str(blank), "--out", str(tmp_path / "x.png")) == 2
    assert_one_line_error(capsys, "No face found", "wall.jpg")


def test_corrupt_file(tmp_path, capsys):
    corrupt = tmp_path / "photo.jpg"
    corrupt.write_bytes(b"this is not a jpeg at all")
    assert generate("--id", str(corrupt), "--out", str(tmp_path / "x.png")) == 2
    assert_one_line_error(capsys, "photo.jpg")


def test_huge_image(tmp_path, capsys):
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 9000)).save(huge)  # 81 megapixels, tiny on disk
    assert generate("--id", str(huge), "--out", str(tmp_path / "x.png")) == 2
    assert_one_line_error(capsys, "huge.png")


def test_missing_weights_offline(obama, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    assert generate("--id", obama, "--profile", "hub", "--out", str(tmp_path / "x.png")) == 2
    # ArcFace is checked first, before any download (tests/test_profiles.py names the missing base model too)
    assert_one_line_error(capsys, "buffalo_l", "MAGICID_INSIGHTFACE_ROOT", "tiny or magicid profile")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--width", "500"), "width 500"),
        (("--steps", "0"), "steps"),
        (("--skeleton", "missing-layout.json"), "missing-layout.json"),
    ],
)
def test_bad_settings(obama, tmp_path, capsys, args, fragment):
    assert generate("--id", obama, "--out", str(tmp_path / "x.png"), *args) == 2
    assert_one_line_error(capsys, fragment)
