"""Every CLI command over the bad-input corpus (`tests/hostile.py`): exit status 0 or 2, at most one `error:` line,
no traceback, and no stray library log lines on stderr (captured at the file-descriptor level)."""

from __future__ import annotations

import json
import re

import pytest
from hostile import bad_images, hostile_layouts, write_layout

from magicid.cli import main


NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |INFO: |WARNING: All log messages)")  # glog / absl / TFLite lines
IMAGE_COMMANDS = {
    "analyze": lambda bad, good, group, out: ["analyze", "--image", bad, "--json"],
    "similarity": lambda bad, good, group, out: ["similarity", bad, good],
    "generate --id": lambda bad, good, group, out: [*GENERATE, "--id", bad, "--out", out],
    "generate --pose": lambda bad, good, group, out: [*GENERATE, "--id", good, "--pose", bad, "--out", out],
    "restore --image": lambda bad, good, group, out: [*RESTORE, "--image", bad, "--id", good, "--out", out],
    "restore --id": lambda bad, good, group, out: [*RESTORE, "--image", group, "--id", bad, "--out", out],
    "layout --from-photo": lambda bad, good, group, out: ["layout", "--from-photo", bad, "--out", out + ".json"],
}
GENERATE = ["generate", "--prompt", "a portrait", "--steps", "1", "--no-restore"]
RESTORE = ["restore", "--steps", "1"]
MUST_FAIL = {
    "not_an_image.jpg", "truncated.jpg", "empty.png", "one_pixel.png", "thin_strip.png", "very_thin_strip.png",
    "bomb.png", "photo.heic",
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, testdata):
    return bad_images(tmp_path_factory.mktemp("bad"), testdata / "portraits" / "barack_obama" / "1.jpg")


@pytest.fixture(scope="module")
def good(testdata) -> str:
    return str(testdata / "portraits" / "barack_obama" / "1.jpg")


@pytest.fixture(scope="module")
def group(testdata) -> str:
    return str(testdata / "fullbody" / "family_three.jpg")


def run_cli(capfd, argv: list[str]) -> tuple[int, list[str]]:
    """Exit status and the non-empty stderr lines of `python -m magicid ARGV`, run in this process."""
    capfd.readouterr()
    code = main(argv)
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    return code, lines


def assert_clean(code: int, lines: list[str], must_fail: bool) -> None:
    assert code == 2 if must_fail else code in (0, 2), lines
    assert not any("Traceback" in line for line in lines), lines
    assert not any(NATIVE_LOG.match(line) for line in lines), lines  # no native library chatter
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == (1 if code == 2 else 0), lines


@pytest.mark.parametrize("command", IMAGE_COMMANDS)
def test_every_command_survives_every_bad_image(command, corpus, good, group, tmp_path, capfd):
    for name, path in corpus.items():
        argv = IMAGE_COMMANDS[command](str(path), good, group, str(tmp_path / name))
        code, lines = run_cli(capfd, argv)
        assert_clean(code, lines, must_fail=name in MUST_FAIL)


def test_thirty_faces_are_restored_up_to_the_cap_and_the_user_is_told(corpus, good, tmp_path, capfd):
    code, lines = run_cli(capfd, [*RESTORE, "--image", str(corpus["thirty_faces.jpg"]), "--id", good, "--reuse-references",
                                  "--out", str(tmp_path / "r.png")])  # fmt: skip
    assert code == 0 and any("30 faces to restore: only the first 8 were" in line for line in lines), lines


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--guidance", "nan"], "guidance must be a finite number"),
        (["--guidance", "inf"], "guidance must be a finite number"),
        (["--id-scale", "nan"], "ID strength must be a finite number"),
        (["--controlnet-scale", "1e30"], "ControlNet strength 1e+30 is out of range"),
        (["--seed", str(2**70)], "seed"),
        (["--steps", "100000"], "steps 100000 is out of range"),
        (["--width", "0"], "width 0 is out of range"),
        (["--device", "bogus"], "device 'bogus'"),
        (["--device", "cuda"], "no usable GPU"),
        (["--dtype", "bogus"], "dtype 'bogus' is not supported"),
        (["--prompt", ""], "Write a prompt"),
    ],
)
def test_generate_refuses_absurd_numbers_and_settings(flags, fragment, good, tmp_path, capfd):
    out = tmp_path / "x.png"
    code, lines = run_cli(capfd, [*GENERATE, "--id", good, "--out", str(out), *flags])
    assert_clean(code, lines, must_fail=True)
    assert fragment in lines[-1] and not out.exists()


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--resolution", "8192"], "resolution 8192 is out of range"),
        (["--steps", "100000"], "steps 100000 is out of range"),
        (["--id-scale", "nan"], "ID strength must be a finite number"),
        (["--landmark-scale", "-1"], "landmark strength -1 is out of range"),
    ],
)
def test_restore_refuses_absurd_numbers(flags, fragment, good, group, tmp_path, capfd):
    code, lines = run_cli(capfd, [*RESTORE, "--image", group, "--id", good, "--out", str(tmp_path / "x.png"), *flags])
    assert_clean(code, lines, must_fail=True)
    assert fragment in lines[-1]


def test_unwritable_outputs_are_one_line_errors(good, group, tmp_path, capfd):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        [*GENERATE, "--id", good, "--out", str(a_file / "x.png")],
        [*GENERATE, "--id", good, "--out", "/proc/magicid/x.png"],
        [*RESTORE, "--image", group, "--id", good, "--out", str(tmp_path / "r.png"), "--debug-dir", str(a_file)],
    ]
    for argv in cases:
        code, lines = run_cli(capfd, argv)
        assert_clean(code, lines, must_fail=True)


def test_layout_command_limits_and_messages(tmp_path, capfd):
    cases = {
        ("--template", "standing", "--people", "2", "--width", "30000", "--preview", str(tmp_path / "p.png")): "64 to 4096",
        ("--template", "standing", "--people", "2", "--width", "9", "--height", "9"): "64 to 4096",
        ("--from-photo", str(tmp_path),): "is a folder",
    }
    for flags, fragment in cases.items():
        code, lines = run_cli(capfd, ["layout", *flags, "--out", str(tmp_path / "l.json")])
        assert_clean(code, lines, must_fail=True)
        assert fragment in lines[-1]


def test_a_photo_whose_name_has_a_comma_is_one_photo(good, tmp_path, capfd):
    named = tmp_path / "obama, 2009.jpg"
    named.write_bytes(open(good, "rb").read())
    code, lines = run_cli(capfd, [*GENERATE, "--id", str(named), "--out", str(tmp_path / "x.png")])
    assert code == 0, lines


def test_every_hostile_layout_is_one_line_and_quotes_nothing(good, tmp_path, capfd, testdata):
    repo_file = testdata / "SOURCES.md"
    secret_fragments = ("root:x:0", repo_file.read_text()[:40])
    for name, text in hostile_layouts(repo_file).items():
        path = write_layout(tmp_path, name, text)
        code, lines = run_cli(capfd, [*GENERATE, "--id", good, "--skeleton", str(path), "--out", str(tmp_path / "x.png")])
        assert_clean(code, lines, must_fail=True)
        assert not any(fragment in line for fragment in secret_fragments for line in lines), (name, lines)
        assert not (tmp_path / "x.png").exists()


def test_a_valid_layout_file_still_generates(good, tmp_path, capfd):
    from magicid.layout import Layout

    path = tmp_path / "ok.json"
    Layout.from_template("half-body", 1).to_json(path)
    code, lines = run_cli(capfd, [*GENERATE, "--id", good, "--skeleton", str(path), "--out", str(tmp_path / "x.png")])
    assert code == 0 and json.loads(path.read_text())["width"] == 512
