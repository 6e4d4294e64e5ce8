"""The studio's person model, undo, persistent errors, Stop and the identity check drawn on the picture."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from magicid.engine import prompt_overflow_note
from magicid.errors import LayoutError
from magicid.layout import Layout
from magicid.tiny import tiny_tokenizer
from ui.generate_tab import StopRequests
from ui.handlers import Stopped, controls_from_parameters
from ui.identity_check import image_checks
from ui.layout_editor import button_edit, recorded


def _two() -> Layout:
    return Layout.from_template("standing", 2, 512, 512).assign_identities(2)


def test_more_people_keeps_every_edit_and_fewer_removes_only_the_last_persons_figures():
    edited = _two().move(0, 0.05, 0.0)
    three = edited.with_identities(3)
    assert [p.identity for p in three.people] == [0, 1, 2]
    assert three.people[0].to_dict() == edited.people[0].to_dict()  # the moved figure kept its place
    back = three.with_identities(1)
    assert [p.identity for p in back.people] == [0] and back.people[0].to_dict() == edited.people[0].to_dict()


def test_removing_a_figure_renames_nobody_and_add_brings_that_person_back():
    layout = Layout.from_template("standing", 3, 512, 512).assign_identities(3)
    removed, message = button_edit(layout, "remove", 1, 3, ["Ann", "Bob", "Cy"])
    assert [p.identity for p in removed.people] == [0, 2] and "Bob" in message
    added, message = button_edit(removed, "add", 0, 3, ["Ann", "Bob", "Cy"])
    assert sorted(p.identity for p in added.people) == [0, 1, 2] and "Bob" in message


def test_edits_are_recorded_for_undo_and_a_failed_edit_changes_nothing():
    start = _two()
    moved = start.move(0, 0.1, 0)
    on_event = recorded(lambda layout: (moved, "canvas", "Moved.", None, None))
    view = on_event([], start, start)
    assert view[5] == [start]  # the old layout is on the history
    same = recorded(lambda layout: (layout, "canvas", "Selected.", None, None))([], start, start)
    assert same[5] == []  # a selection is no edit

    def fails(layout):
        raise LayoutError("there is no person 9")

    failed = recorded(fails)([start], start, start)
    assert failed[2] == "⚠ there is no person 9" and len(failed) == 6


def test_stop_raises_at_the_next_step_of_that_session_only():
    stops, seen = StopRequests(), []
    mine, other = SimpleNamespace(session_hash="a"), SimpleNamespace(session_hash="b")
    on_step = stops.progress(mine, lambda value, desc: seen.append(value), "Generating")
    theirs = stops.progress(other, lambda value, desc: None, "Generating")
    on_step(1, 30)
    stops.request(mine)
    theirs(2, 30)  # another visitor's request goes on
    with pytest.raises(Stopped, match="step 2 of 30"):
        on_step(2, 30)
    assert seen == [(1, 30)]


def test_identity_check_boxes_say_who_is_where_and_which_faces_fail():
    layout = _two()
    image = Image.new("RGB", (512, 512))
    report = [
        SimpleNamespace(identity=0, similarity=0.61, iou=0.7, face_box=(10, 20, 60, 80), status="ok"),
        SimpleNamespace(identity=1, similarity=0.0, iou=0.0, face_box=None, status="missing"),
    ]
    (check,) = image_checks([image], report, layout, ["Ann", "Bob"], threshold=0.5)
    _, boxes = check.annotated()
    assert boxes[0] == ((10, 20, 60, 80), "✓ Ann: likeness 0.61 ≥ 0.50")
    assert boxes[1][0] == tuple(int(round(float(v))) for v in layout.identity_boxes(2)[1])  # drawn at their place
    assert boxes[1][1] == "✗ Bob: not found in their place"
    assert [face.name for face in check.failing] == ["Bob"]
    low = image_checks([image], [SimpleNamespace(**{**vars(report[0]), "similarity": 0.3})], layout, ["Ann"], 0.5)
    assert low[0].failing and "0.30 < 0.50" in low[0].faces[0].label


def test_a_long_prompt_says_what_was_cut_off():
    tokenizer = tiny_tokenizer()
    assert prompt_overflow_note(tokenizer, "a portrait") == ""
    note = prompt_overflow_note(tokenizer, "x" * 70 + " and a red balloon")
    assert "balloon" in note and "ignored" in note and "x" * 5 not in note


def test_settings_from_a_png_bring_back_the_people_and_their_names():
    controls = controls_from_parameters({"names": ["Ann", "Bob"], "layout": _two().to_dict(), "seed": 3})
    assert controls["names"] == ["Ann", "Bob"] and len(controls["layout"].people) == 2
    assert "names" not in controls_from_parameters({"names": [{"hostile": 1}]})
