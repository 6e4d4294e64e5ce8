"""Layouts: JSON round trip, templates, face-region masks M_id^i, validation, edits, the `layout` command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from diffusers.image_processor import IPAdapterMaskProcessor

from magicid.commands import layout as layout_command
from magicid.errors import LayoutError, MagicIDError
from magicid.face_regions import iou
from magicid.layout import JOINT_INDEX, JOINTS, MAX_TEMPLATE_PEOPLE, TEMPLATES, Layout, Person


ALL_TEMPLATES = [(name, n) for name in TEMPLATES for n in range(1, MAX_TEMPLATE_PEOPLE + 1)]
NOSE, NECK = JOINT_INDEX["nose"], JOINT_INDEX["neck"]


def head_centre(layout: Layout, person: int) -> np.ndarray:
    box = layout.face_box(person)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def pixel(layout: Layout, person: int, joint: int) -> tuple[int, int]:
    x, y = layout.people[person].keypoints[joint, :2] * (layout.width, layout.height)
    return int(y), int(x)


def ring_landmarks(layout: Layout, person: int, count: int = 68) -> np.ndarray:
    """Synthetic dense landmarks (dlib-68 sized, drawn without a model): an ellipse inside the face box, normalised."""
    x0, y0, x1, y1 = layout.face_box(person) / np.array([layout.width, layout.height] * 2)
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    xs, ys = (x0 + x1) / 2 + 0.4 * (x1 - x0) * np.cos(angles), (y0 + y1) / 2 + 0.4 * (y1 - y0) * np.sin(angles)
    return np.stack([xs, ys], axis=1)


def with_landmarks(layout: Layout, person: int = 0) -> Layout:
    result = Layout.from_dict(layout.to_dict())
    result.people[person].face_landmarks = ring_landmarks(layout, person)
    return result


# ---- JSON ----------------------------------------------------------------------------------------------------


def test_json_round_trip_keeps_everything(tmp_path):
    layout = Layout.from_template("full-body", 3, 768, 512).set_identity(0, 2).set_identity(2, 0)
    layout.people[1].face_box = np.array([0.4, 0.1, 0.5, 0.25])
    path = tmp_path / "layout.json"
    text = layout.to_json(path)

    again = Layout.read(path)

    assert json.loads(text).keys() >= {"width", "height", "people"}
    assert (again.width, again.height, len(again.people)) == (768, 512, 3)
    assert [p.identity for p in again.people] == [2, None, 0]
    np.testing.assert_allclose(again.people[1].face_box, [0.4, 0.1, 0.5, 0.25])
    for before, after in zip(layout.people, again.people):
        np.testing.assert_allclose(after.keypoints, before.keypoints, atol=1e-6)
    assert Layout.from_json(text).to_json() == text == again.to_json()


def test_json_round_trip_keeps_face_landmarks_and_old_files_still_load():
    layout = with_landmarks(Layout.from_template("standing", 2), person=1)

    again = Layout.from_json(layout.to_json())
    old_style = layout.to_dict()
    for person in old_style["people"]:
        del person["face_landmarks"]  # a layout saved before landmarks existed

    assert again.people[0].face_landmarks is None and again.people[1].face_landmarks.shape == (68, 2)
    np.testing.assert_allclose(again.people[1].face_landmarks, layout.people[1].face_landmarks, atol=5e-5)  # stored to 1e-4 of the canvas: 0.1 px at 1024
    assert all(person.face_landmarks is None for person in Layout.from_dict(old_style).people)
    with pytest.raises(LayoutError, match="face landmarks must be 1 to 500"):
        Person(layout.people[0].keypoints, face_landmarks=np.zeros((5, 3)))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"width": 512, "height": 512}', "needs `width`, `height` and `people`"),
        ('{"width": 512, "height": 512, "people": [{"keypoints": [[0, 0, 1]]}]}', "18 OpenPose keypoints"),
        ("missing_layout.json", "not valid JSON"),
        ("/etc/passwd", "not valid JSON"),
    ],
)
def test_bad_json_gives_one_line_layout_error(text, message):
    with pytest.raises(LayoutError, match=message) as error:
        Layout.from_json(text)
    assert "\n" not in str(error.value)


# ---- templates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, num_people", ALL_TEMPLATES)
def test_templates_spread_people_left_to_right_inside_the_canvas(name, num_people):
    layout = Layout.from_template(name, num_people, 768, 512)

    assert len(layout.people) == num_people
    for person in layout.people:
        visible = person.keypoints[person.keypoints[:, 2] > 0, :2]
        assert ((visible >= 0) & (visible <= 1)).all()
        assert person.visible(NOSE) and person.visible(NECK)
    centres = [head_centre(layout, i)[0] for i in range(num_people)]
    assert centres == sorted(centres)
    assert layout.left_to_right() == list(range(num_people))
    assert layout.validate(num_people) == []


@pytest.mark.parametrize("name, num_people", ALL_TEMPLATES)
def test_template_masks_sit_on_their_own_heads_only(name, num_people):
    layout = Layout.from_template(name, num_people, 512, 512)
    masks = layout.identity_masks(num_people)

    assert masks.shape == (num_people, 512, 512) and masks.dtype == np.float32
    assert masks.min() >= 0 and masks.max() <= 1
    for i in range(num_people):
        assert masks[i][pixel(layout, i, NOSE)] > 0.95
        for other in range(num_people):
            if other != i:
                assert masks[i][pixel(layout, other, NOSE)] == 0
        for joint in ("r_shoulder", "l_shoulder"):  # tiny faces get a minimum mask size, which may graze these
            assert masks[i][pixel(layout, i, JOINT_INDEX[joint])] < 0.1
        for joint in ("r_hip", "l_hip"):
            assert masks[i][pixel(layout, i, JOINT_INDEX[joint])] == 0
        box = layout.face_box(i)
        ys, xs = np.nonzero(masks[i] > 0.5)
        assert box[0] - 25 <= xs.mean() <= box[2] + 25 and box[1] - 25 <= ys.mean() <= box[3] + 25
    assert (masks.prod(axis=0) == 0).all() if num_people > 1 else True  # no two identities share a pixel


@pytest.mark.parametrize(
    "name, num_people", [("standing", 3), ("half-body", 2), ("half-body", 6), ("full-body", 6), ("sitting", 5)]
)
@pytest.mark.parametrize("grid", [32, 16])
def test_masks_stay_on_the_heads_at_attention_token_grids(name, num_people, grid):
    layout = Layout.from_template(name, num_people, 512, 512)
    masks = torch.from_numpy(layout.identity_masks(num_people))

    cell = 512 / grid
    for i in range(num_people):
        # exactly what diffusers' IP-Adapter processor does to `ip_adapter_masks[0][:, i]` in a layer
        small = IPAdapterMaskProcessor.downsample(masks[None, i], 1, grid * grid, 1).view(grid, grid)
        row, col = divmod(int(small.argmax()), grid)
        x0, y0, x1, y1 = layout.face_box(i)
        assert small.max() > 0.5
        assert x0 - cell <= (col + 0.5) * cell <= x1 + cell and y0 - cell <= (row + 0.5) * cell <= y1 + cell
        for other in range(num_people):
            if other != i:
                other_small = IPAdapterMaskProcessor.downsample(masks[None, other], 1, grid * grid, 1).view(grid, grid)
                assert other_small[row, col] < 0.1


def test_template_sizes_follow_the_canvas_aspect():
    for width, height in ((1024, 512), (512, 1024), (512, 512)):
        layout = Layout.from_template("standing", 2, width, height)
        x0, y0, x1, y1 = layout.face_box(0)
        assert (y1 - y0) / (x1 - x0) == pytest.approx(1.32)  # proportions hold in pixels, whatever the aspect
        ankles = layout.people[0].keypoints[[JOINT_INDEX["r_ankle"], JOINT_INDEX["l_ankle"]], 1].max()
        body_px = (ankles * height) - y0
        assert 0.6 * min(height, width) < body_px <= 0.95 * height


def test_big_half_body_groups_stand_in_two_rows_with_bigger_faces():
    one_row, two_rows = Layout.from_template("half-body", 3), Layout.from_template("half-body", 4)
    face_width = lambda lay, i: lay.face_box(i)[2] - lay.face_box(i)[0]  # noqa: E731

    assert min(face_width(two_rows, i) for i in range(4)) > 1.0 * max(face_width(one_row, i) for i in range(3))
    heads_y = [head_centre(two_rows, i)[1] for i in range(4)]
    assert heads_y[1] < heads_y[0] - 20 and heads_y[3] < heads_y[2] - 20  # the back row is raised
    assert not two_rows.people[1].visible(JOINT_INDEX["r_wrist"])  # hidden behind the front row
    assert two_rows.validate(4) == []


@pytest.mark.parametrize("name, num_people", [("nope", 2), ("standing", 0), ("standing", 7)])
def test_bad_template_requests_raise(name, num_people):
    with pytest.raises(LayoutError):
        Layout.from_template(name, num_people)


def test_skeleton_is_drawn_at_canvas_size_where_the_people_are():
    layout = Layout.from_template("standing", 2, 512, 384)
    image = np.asarray(layout.render_skeleton())

    assert image.shape == (384, 512, 3)
    for person in range(2):
        y, x = pixel(layout, person, NECK)
        assert image[y - 2 : y + 3, x - 2 : x + 3].max() > 100
    assert image[:, 250:262].max() == 0  # nothing between the two people


@pytest.mark.parametrize("name", TEMPLATES)
def test_condition_of_a_template_is_exactly_its_skeleton(name):
    layout = Layout.from_template(name, 3, 512, 384)
    assert not layout.has_face_landmarks()
    assert np.array_equal(np.asarray(layout.render_condition()), np.asarray(layout.render_skeleton()))


def test_condition_draws_face_landmarks_over_the_skeleton_like_training():
    layout = with_landmarks(Layout.from_template("half-body", 2, 512, 384), person=1)
    skeleton, landmarks = np.asarray(layout.render_skeleton()), np.asarray(layout.render_face_landmarks())
    condition = np.asarray(layout.render_condition())

    assert condition.shape == skeleton.shape == landmarks.shape == (384, 512, 3)
    assert np.array_equal(condition, np.maximum(skeleton, landmarks))  # torch.maximum(skeleton, landmarks)
    x0, y0, x1, y1 = layout.face_box(1).astype(int)
    assert (landmarks[y0:y1, x0:x1] > 0).any() and (condition != skeleton)[y0:y1, x0:x1].any()
    x0, y0, x1, y1 = layout.face_box(0).astype(int)
    assert not landmarks[y0:y1, x0:x1].any()  # person 1 has no landmarks: skeleton only


# ---- assignment and validation -------------------------------------------------------------------------------


def test_default_assignment_is_left_to_right_and_explicit_order_wins():
    layout = Layout.from_template("standing", 3)
    shuffled = Layout(layout.width, layout.height, [layout.people[2], layout.people[0], layout.people[1]])

    assert [p.identity for p in shuffled.assign_identities(3).people] == [2, 0, 1]
    assert [p.identity for p in shuffled.assign_identities(2, order=[0, 2]).people] == [0, None, 1]
    masks = shuffled.identity_masks(3)
    assert masks[0][pixel(shuffled, 1, NOSE)] > 0.95  # identity 1 = leftmost = person index 1
    explicit = shuffled.assign_identities(3, order=[0, 1, 2])
    assert explicit.identity_masks(3)[0][pixel(shuffled, 0, NOSE)] > 0.95
    with pytest.raises(LayoutError, match="own person"):
        layout.assign_identities(2, order=[1, 1])
    with pytest.raises(LayoutError, match="no person 5"):
        layout.assign_identities(1, order=[4])


def test_set_identity_swaps_with_whoever_showed_it():
    layout = Layout.from_template("standing", 3).assign_identities(3)
    assert [p.identity for p in layout.set_identity(0, 2).people] == [2, 1, 0]
    assert [p.identity for p in layout.set_identity(1, None).people] == [0, None, 2]
    assert [p.identity for p in Layout.from_template("standing", 2).set_identity(1, 0).people] == [None, 0]


def test_identity_without_a_person_is_an_error():
    layout = Layout.from_template("standing", 2)
    with pytest.raises(LayoutError, match="identity 3 has no person"):
        layout.validate(3)
    with pytest.raises(LayoutError, match="identity 2 has no person"):
        layout.set_identity(0, 0).validate(2)  # explicit assignment leaves identity 2 out
    with pytest.raises(LayoutError, match="no people"):
        Layout(512, 512, []).validate(1)


def test_person_off_canvas_is_an_error_and_partly_off_joints_a_warning():
    layout = Layout.from_template("standing", 2)
    with pytest.raises(LayoutError, match="person 2's head is outside the canvas"):
        layout.move(1, 0.0, -0.4).validate(2)
    warnings = layout.move(1, 0.0, 0.3).validate(2)
    assert any("person 2" in w and "outside the canvas" in w for w in warnings)
    assert any("outside the canvas" in w for w in layout.move(1, 0.0, -0.4).validate(1))  # no identity: a warning


def test_overlapping_faces_and_extra_people_are_warnings():
    layout = Layout.from_template("standing", 3)
    dx = (head_centre(layout, 0)[0] - head_centre(layout, 1)[0] + 4) / layout.width
    crowded = layout.move(1, dx, 0.0)

    assert any("person 1 and person 2 overlap" in w for w in crowded.validate(3))
    assert any("3 people but 2 identities" in w for w in layout.validate(2))


def test_headless_person_cannot_show_an_identity():
    keypoints = Layout.from_template("standing", 1).people[0].keypoints.copy()
    keypoints[[NOSE, 14, 15, 16, 17]] = 0
    layout = Layout(512, 512, [Person(keypoints, identity=0)])
    with pytest.raises(LayoutError, match="no head keypoints"):
        layout.validate(1)
    x0, y0, x1, y1 = layout.face_boxes()[0]  # still drawn (by the editor) just above the neck
    neck_x, neck_y = keypoints[NECK, :2] * 512
    assert x0 < neck_x < x1 and y1 < neck_y
    assert layout.left_to_right() == [] and Layout(512, 512, [Person(np.zeros((18, 3)))]).face_boxes() == [None]


def test_explicit_face_box_replaces_the_keypoint_estimate():
    layout = Layout.from_template("standing", 1)
    layout.people[0].face_box = np.array([0.1, 0.1, 0.3, 0.35])
    np.testing.assert_allclose(layout.face_box(0), [51.2, 51.2, 153.6, 179.2])
    mask = layout.identity_masks(1)[0]
    assert mask[int(0.22 * 512), int(0.2 * 512)] == 1 and mask[pixel(layout, 0, NECK)] == 0


# ---- edits ---------------------------------------------------------------------------------------------------


def test_edits_return_new_layouts_and_leave_the_original_alone():
    layout = Layout.from_template("full-body", 2)
    before = layout.to_json()
    moved = layout.move(0, 0.1, -0.05)

    np.testing.assert_allclose(moved.people[0].keypoints[:, :2], layout.people[0].keypoints[:, :2] + [0.1, -0.05])
    for edited in (moved, layout.scale(0, 1.3), layout.mirror(1), layout.set_joint(0, "l_wrist", 0.5, 0.5),
                   layout.add_person(), layout.remove_person(0), layout.set_identity(1, 0)):  # fmt: skip
        assert edited is not layout
    assert layout.to_json() == before


def test_scale_about_the_head_keeps_the_head_in_place():
    layout = Layout.from_template("standing", 2)
    bigger = layout.scale(1, 1.5, around="head")
    np.testing.assert_allclose(head_centre(bigger, 1), head_centre(layout, 1), atol=1e-6)
    width = lambda lay: lay.face_box(1)[2] - lay.face_box(1)[0]  # noqa: E731
    assert width(bigger) == pytest.approx(1.5 * width(layout))
    centred = layout.scale(1, 0.5, around="centre")
    assert head_centre(centred, 1)[1] > head_centre(layout, 1)[1]  # shrinking about the body centre lowers the head


def test_mirror_swaps_left_and_right_joints():
    layout = Layout.from_template("full-body", 3)  # person 2 waves with the left arm
    original = layout.people[1].keypoints
    mirrored = layout.mirror(1).people[1].keypoints
    r_wrist, l_wrist = JOINT_INDEX["r_wrist"], JOINT_INDEX["l_wrist"]

    assert original[l_wrist, 1] < original[r_wrist, 1] - 0.1  # the raised hand
    assert mirrored[r_wrist, 1] == pytest.approx(original[l_wrist, 1])
    assert mirrored[l_wrist, 1] == pytest.approx(original[r_wrist, 1])
    centre_x = mirrored[r_wrist, 0] + original[l_wrist, 0]
    assert mirrored[l_wrist, 0] + original[r_wrist, 0] == pytest.approx(centre_x)
    assert mirrored[r_wrist, 0] < mirrored[JOINT_INDEX["r_shoulder"], 0] - 0.05 or centre_x > 0
    np.testing.assert_allclose(layout.mirror(1).mirror(1).people[1].keypoints, original, atol=1e-9)


def test_set_joint_add_and_remove_person():
    layout = Layout.from_template("standing", 2)
    edited = layout.set_joint(0, "l_wrist", 0.3, 0.2).set_joint(0, JOINT_INDEX["r_knee"], 0.1, 0.9, confidence=0)
    assert tuple(edited.people[0].keypoints[JOINT_INDEX["l_wrist"]]) == (0.3, 0.2, 1.0)
    assert not edited.people[0].visible(JOINT_INDEX["r_knee"])
    with pytest.raises(LayoutError, match="unknown joint"):
        layout.set_joint(0, "tail", 0.1, 0.1)
    assert len(layout.add_person().people) == 3 and len(layout.remove_person(1).people) == 1
    with pytest.raises(LayoutError, match="no person 3"):
        layout.move(2, 0.1, 0.1)
    assert len(JOINTS) == 18


def test_edits_move_face_landmarks_with_the_person():
    layout = with_landmarks(Layout.from_template("full-body", 3))
    points = layout.people[0].face_landmarks
    visible = layout.people[0].keypoints[layout.people[0].keypoints[:, 2] > 0]
    pivot_x = (visible[:, 0].min() + visible[:, 0].max()) / 2  # the body centre
    head = head_centre(layout, 0) / (layout.width, layout.height)

    np.testing.assert_allclose(layout.move(0, 0.1, -0.05).people[0].face_landmarks, points + (0.1, -0.05))
    np.testing.assert_allclose(layout.scale(0, 2.0).people[0].face_landmarks, head + (points - head) * 2.0)
    mirrored = layout.mirror(0).people[0].face_landmarks
    np.testing.assert_allclose(mirrored[:, 0], 2 * pivot_x - points[:, 0])  # x flips about the body centre
    np.testing.assert_allclose(mirrored[:, 1], points[:, 1])
    wide = layout.fit_to(1024, 512).people[0].face_landmarks
    np.testing.assert_allclose(wide, (points * 512 + (256, 0)) / (1024, 512))
    assert layout.set_joint(0, "l_wrist", 0.5, 0.5).people[0].face_landmarks is not None
    assert layout.set_joint(0, "nose", 0.5, 0.5).people[0].face_landmarks is None  # no longer matches the head
    assert layout.people[0].face_landmarks is points  # edits leave the original alone


def test_fit_to_keeps_proportions():
    layout = Layout.from_template("standing", 2, 512, 512)
    wide = layout.fit_to(1024, 512)
    assert (wide.width, wide.height) == (1024, 512)
    np.testing.assert_allclose(wide.face_box(0)[[1, 3]], layout.face_box(0)[[1, 3]], atol=1e-6)
    np.testing.assert_allclose(wide.face_box(0)[[0, 2]], layout.face_box(0)[[0, 2]] + 256, atol=1e-6)


# ---- the `layout` command ------------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    layout_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_layout_command_writes_a_template_layout(tmp_path, capsys):
    out, preview = tmp_path / "group.json", tmp_path / "preview.png"
    argv = ["--template", "sitting", "--people", "4", "--out", str(out), "--width", "768", "--preview", str(preview)]
    code = layout_command.run(parse(argv))
    layout = Layout.read(out)
    assert code == 0 and (layout.width, layout.height, len(layout.people)) == (768, 512, 4)
    assert preview.is_file() and "4 people" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--template", "standing"], "needs --people"),
        (["--template", "standing", "--people", "9"], "1 to 6 people"),
        (["--from-photo", "nowhere.jpg"], "not found"),
        (["--from-photo", "x.jpg", "--people", "2"], "--people is for --template"),
    ],
)
def test_layout_command_bad_input_raises_a_user_error(tmp_path, argv, message):
    with pytest.raises(MagicIDError, match=message):
        layout_command.run(parse([*argv, "--out", str(tmp_path / "x.json")]))


def test_people_need_18_keypoints_and_a_valid_face_box():
    with pytest.raises(LayoutError):
        Person(np.zeros((17, 3)))
    with pytest.raises(LayoutError):
        Person(np.zeros((18, 3)), face_box=np.array([0.5, 0.5, 0.4, 0.6]))
    assert iou(np.array([0, 0, 2, 2]), np.array([1, 0, 3, 2])) == pytest.approx(1 / 3)


def test_cli_layout_from_a_photo_and_a_one_line_error(tmp_path, testdata, capsys):
    from magicid.cli import main

    out = tmp_path / "couple.json"
    assert main(["layout", "--from-photo", str(testdata / "group" / "voc_couple.jpg"), "--out", str(out)]) == 0
    layout = Layout.read(out)
    assert (layout.width, layout.height) == (768, 1024)  # the closest standard size to the 400 x 500 photo
    assert len(layout.left_to_right()) == 2 and all(p.face_box is not None for p in layout.people)
    capsys.readouterr()

    assert main(["layout", "--template", "standing", "--people", "9", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_faces_join_skeletons_by_the_best_overall_fit(monkeypatch):
    """Greedy, the larger face would take skeleton A (its best head) and push the smaller face, which sits squarely on
    A's head, onto B's; the global assignment gives A the small face and B the large one. A face that barely touches
    a head (IoU under the minimum) becomes a person of its own."""
    import magicid.layout_from_photo as layout_module
    from magicid.perception import Face

    heads = {0.1: np.array([0.0, 0, 100, 100]), 0.2: np.array([60.0, 0, 160, 100]), 0.3: np.array([400.0, 0, 500, 100])}
    monkeypatch.setattr(layout_module, "face_box_from_keypoints", lambda pose, w, h: heads[round(float(pose[0, 0]), 1)])

    def pose(marker):
        keypoints = np.zeros((18, 3))
        keypoints[0] = (marker, 0.1, 1.0)
        return keypoints

    def face(x0, x1):
        box = np.array([x0, 0.0, x1, 100.0])
        kps = np.array([[x0 + 20, 40], [x1 - 20, 40], [(x0 + x1) / 2, 60], [x0 + 25, 80], [x1 - 25, 80]], float)
        return Face(box=box, score=0.99, kps5=kps)

    large, small, stray = face(30, 120), face(0, 80), face(470, 570)  # stray: IoU 0.18 with head C
    people = layout_module.attach_faces([pose(0.1), pose(0.2), pose(0.3)], [large, small, stray], (1000, 1000))
    boxes = [None if person.face_box is None else np.round(person.face_box * 1000) for person in people]
    assert np.allclose(boxes[0], small.box) and np.allclose(boxes[1], large.box)
    assert boxes[2] is None and len(people) == 4 and np.allclose(boxes[3], stray.box)


def test_portrait_template_frames_the_face_as_mini_was_trained():
    """About half the canvas high and centred, as in MagicID-mini's 128 px crops (a face 1 / 1.8 of the side)."""
    layout = Layout.from_template("portrait", 1, 512, 512)
    x0, y0, x1, y1 = layout.face_box(0)
    assert 0.4 <= (y1 - y0) / 512 <= 0.6
    assert abs((x0 + x1) / 2 - 256) < 30 and abs((y0 + y1) / 2 - 256) < 40
