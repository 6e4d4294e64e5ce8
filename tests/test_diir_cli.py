"""`python -m magicid restore`: a real full-body photo through the CLI with the tiny profile."""

from __future__ import annotations

import numpy as np
from PIL import Image

from magicid.cli import main
from magicid.pngmeta import read_parameters


def test_restore_command_writes_the_restored_picture(testdata, tmp_path, capsys):
    image = testdata / "fullbody" / "man_by_truck.jpg"
    out = tmp_path / "restored.png"
    code = main([
        "restore", "--image", str(image), "--id", str(testdata / "portraits" / "matt_damon" / "1.jpg"),
        "--name", "Damon", "--out", str(out), "--steps", "1", "--resolution", "64", "--profile", "tiny",
        "--debug-dir", str(tmp_path / "debug"), "--min-similarity", "-1",  # the man by the truck is not Damon
    ])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert str(out) in captured.out
    assert "as Damon" in captured.err
    parameters = read_parameters(out)
    assert parameters["command"] == "restore" and parameters["identities"] == ["Damon"]
    assert parameters["diir"]["steps"] == 1
    with Image.open(image) as original, Image.open(out) as restored:
        assert restored.size == original.size
        assert not np.array_equal(np.asarray(original.convert("RGB")), np.asarray(restored.convert("RGB")))
    assert len(list((tmp_path / "debug").glob("*.png"))) == 4


def test_restore_command_explains_bad_options(testdata, tmp_path, capsys):
    portrait = str(testdata / "portraits" / "matt_damon" / "1.jpg")
    common = ["restore", "--image", portrait, "--id", portrait, "--out", str(tmp_path / "x.png")]
    assert main([*common, "--assign", "3"]) == 2
    assert "Face 1 is given as '3': use a reference number (1 to 1) or off" in capsys.readouterr().err
    assert main([*common, "--resolution", "60"]) == 2
    assert "resolution 60 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
