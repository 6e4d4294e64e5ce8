"""`python -m magicid analyze` and `python -m magicid similarity` on real photos."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from magicid.commands import analyze, similarity
from magicid.errors import InvalidImageError, NoFaceError


def _run(command, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


def test_commands_expose_the_cli_contract():
    for command in (analyze, similarity):
        assert isinstance(command.HELP, str) and command.HELP
        assert callable(command.add_arguments) and callable(command.run)


def test_analyze_json_and_renders(testdata, tmp_path, capsys):
    photo = testdata / "group/voc_three_friends.jpg"
    assert _run(analyze, ["--image", str(photo), "--json", "--render", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["image"], report["width"], report["height"]) == ("voc_three_friends.jpg", 500, 375)
    assert len(report["faces"]) == 3
    assert all(len(face["box"]) == 4 and face["score"] >= 0.9 and face["size"] > 50 for face in report["faces"])
    assert report["persons"] and all(np.array(p["keypoints"]).shape == (18, 3) for p in report["persons"])
    for kind in ("openpose", "landmarks", "mask"):
        rendered = Image.open(tmp_path / f"voc_three_friends_{kind}.png")
        assert rendered.size == (500, 375) and np.asarray(rendered).max() > 0


def test_analyze_text_lists_faces(testdata, capsys):
    assert _run(analyze, ["--image", str(testdata / "portraits/yang_mi/3.jpg")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3.jpg: 274x274, 1 face(s)") and "face 0: box (" in out


def test_similarity_prints_same_person_higher(testdata, capsys):
    robert = [str(testdata / f"portraits/robert_downey_jr/{n}.jpg") for n in (2, 3)]
    sundar = str(testdata / "portraits/sundar_pichai/2.jpg")
    assert _run(similarity, robert) == 0
    same = float(capsys.readouterr().out.strip())
    assert _run(similarity, [robert[0], sundar, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedder"] in ("dlib", "arcface") and report["warnings"] == []
    assert -1.0 <= report["similarity"] < same <= 1.0
    assert report["same_person"] is False


def test_similarity_reports_bad_inputs(testdata, tmp_path, capsys):
    text = tmp_path / "a.txt"
    text.write_text("hello")
    with pytest.raises(InvalidImageError, match="^a.txt is not an image"):
        _run(similarity, [str(text), str(testdata / "portraits/yang_mi/1.jpg")])
    Image.new("RGB", (200, 200), (40, 80, 120)).save(tmp_path / "wall.png")
    with pytest.raises(NoFaceError, match="^No face found in wall.png"):
        _run(similarity, [str(tmp_path / "wall.png"), str(testdata / "portraits/yang_mi/1.jpg")])


def test_similarity_warns_about_group_photo(testdata, capsys):
    assert _run(similarity, [str(testdata / "group/voc_couple.jpg"), str(testdata / "portraits/yang_mi/1.jpg")]) == 0
    assert "warning: 2 faces found in voc_couple.jpg; using the largest" in capsys.readouterr().err
