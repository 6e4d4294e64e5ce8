"""Group photos: layouts from real group photos, the per-identity report, conditions for the generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from magicid.errors import LayoutError
from magicid.face_regions import iou
from magicid.group import group_conditions, identity_report, report_lines
from magicid.imageio import load_image
from magicid.layout import Layout
from magicid.perception import detect_faces, get_face_embedder
from magicid.perception.analysis import ImageAnalysis


GROUP_PHOTOS = ("group/voc_three_friends.jpg", "group/friends_cast.jpg")


def mask_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask > 0.5)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


@pytest.fixture(scope="module")
def photo_layouts(testdata):
    """(photo, its detected faces, its layout at the photo's own size) per group photo."""
    result = {}
    for name in GROUP_PHOTOS:
        photo = load_image(testdata / name)
        result[name] = (photo, detect_faces(photo), Layout.from_photo(photo, photo.width, photo.height))
    return result


@pytest.fixture(scope="module")
def three_friends(photo_layouts):
    """voc_three_friends with its layout, and each face's embedding as the reference identities, left to right."""
    photo, faces, layout = photo_layouts["group/voc_three_friends.jpg"]
    faces = sorted(faces, key=lambda face: face.center[0])
    embedder = get_face_embedder()
    references = [embedder.embed(photo, face) for face in faces]
    return photo, faces, layout, references, embedder


@pytest.mark.parametrize("name", GROUP_PHOTOS)
def test_layout_from_a_group_photo_puts_one_mask_on_each_face(photo_layouts, name):
    photo, faces, layout = photo_layouts[name]
    num = len(layout.left_to_right())
    masks = layout.identity_masks(num)

    assert len(faces) >= 3 and num >= len(faces)
    assert layout.validate(num) == [] or all("overlap" not in w for w in layout.validate(num))
    for face in faces:
        overlaps = [iou(face.box, mask_box(mask)) for mask in masks]
        assert sum(value > 0.5 for value in overlaps) == 1, overlaps
        assert sorted(overlaps)[-2:][0] < 0.1 if len(overlaps) > 1 else True  # no second mask on that face


@pytest.mark.parametrize("name", GROUP_PHOTOS)
def test_layout_from_a_group_photo_draws_face_landmarks_into_the_condition(photo_layouts, name):
    photo, faces, layout = photo_layouts[name]
    skeleton, landmarks = np.asarray(layout.render_skeleton()), np.asarray(layout.render_face_landmarks())
    condition = np.asarray(layout.render_condition())

    assert all(person.face_landmarks is not None for person in layout.people if person.face_box is not None)
    assert sum(person.face_landmarks is not None for person in layout.people) >= len(faces)
    assert np.array_equal(condition, np.maximum(skeleton, landmarks))  # as training's "all" stage draws both
    for face in faces:
        x0, y0, x1, y1 = face.box.astype(int)
        inside = (condition != skeleton)[max(y0, 0) : y1, max(x0, 0) : x1].any(axis=-1)
        assert inside.sum() > 0.01 * inside.size, face.box  # landmark contours add pixels on every face


def test_group_conditions_use_the_landmarks_of_a_photo_layout(photo_layouts):
    _, _, layout = photo_layouts["group/voc_three_friends.jpg"]

    conditions = group_conditions(layout, 3, width=768, height=512)
    control = np.asarray(conditions.control_image)

    assert conditions.layout.has_face_landmarks()
    assert np.array_equal(control, np.asarray(conditions.layout.render_condition()))
    assert not np.array_equal(control, np.asarray(conditions.layout.render_skeleton()))


def test_layout_from_photo_fits_a_standard_canvas(photo_layouts, testdata):
    photo, faces, native = photo_layouts["group/voc_three_friends.jpg"]
    fitted = native.fit_to(768, 512)  # what from_photo does for a 500 x 375 photo by default
    assert (native.width, native.height) == photo.size
    box, face = fitted.face_box(native.left_to_right()[0]), min(faces, key=lambda f: f.center[0])
    scale = min(768 / photo.width, 512 / photo.height)
    expected = face.box * scale + [(768 - photo.width * scale) / 2, 0, (768 - photo.width * scale) / 2, 0]
    assert iou(box, expected) > 0.95


def test_identity_report_finds_every_identity_in_place(three_friends):
    photo, faces, layout, references, embedder = three_friends

    matches = identity_report(ImageAnalysis(photo, faces), layout, references, embedder=embedder)

    assert [m.status for m in matches] == ["ok", "ok", "ok"]
    assert all(m.similarity > 0.99 and m.iou > 0.5 for m in matches)
    lines = report_lines(matches, ["Ann", "", "Cy"])
    assert lines[0].startswith("Ann: FaceSim 1.00") and lines[1].startswith("identity 2:")
    assert lines[-1].startswith("mean FaceSim 1.00")


def test_identity_report_flags_swapped_and_missing_identities(three_friends):
    photo, faces, layout, references, embedder = three_friends

    swapped_references = [references[1], references[0], references[2]]
    swapped = identity_report(ImageAnalysis(photo, faces), layout, swapped_references, embedder=embedder)
    empty_corner = layout.move(layout.left_to_right()[2], 0.0, -0.6)  # region 3 now holds no face
    missing = identity_report(ImageAnalysis(photo, faces), empty_corner, references, embedder=embedder)

    assert swapped[0].similarity < 0.95 and swapped[1].similarity < 0.95 and swapped[2].similarity > 0.99
    assert missing[2].status in ("missing", "misplaced") and missing[2].similarity == 0.0
    assert missing[2].face_box is None and [m.status for m in missing[:2]] == ["ok", "ok"]


def test_identity_report_flags_an_identity_shown_twice(three_friends):
    photo, faces, layout, references, embedder = three_friends
    first, second = faces[0], faces[1]
    cloned = photo.copy()
    x0, y0, x1, y1 = (first.box + [-10, -10, 10, 10]).astype(int)
    side = int(max(second.box[2] - second.box[0], second.box[3] - second.box[1])) + 20
    cx, cy = second.center.astype(int)
    crop = photo.crop((x0, y0, x1, y1)).resize((side, int(side * (y1 - y0) / (x1 - x0))), Image.LANCZOS)
    cloned.paste(crop, (cx - side // 2, cy - crop.height // 2))

    matches = identity_report(cloned, layout, references, embedder=embedder)

    assert matches[0].status == "duplicate"
    assert matches[1].similarity < 0.95  # the second region shows identity 1's face, not identity 2


def test_identity_report_accepts_identity_objects_and_resized_images(three_friends):
    photo, faces, layout, references, embedder = three_friends

    class Named:
        def __init__(self, embedding):
            self.embedding = embedding

    smaller = photo.resize((photo.width * 3 // 4, photo.height * 3 // 4))
    matches = identity_report(smaller, layout, [Named(r) for r in references], embedder=embedder)
    assert [m.status for m in matches] == ["ok", "ok", "ok"]
    assert identity_report(photo, layout, [], embedder=embedder) == []


def test_group_conditions_fit_the_layout_to_the_generation_size():
    layout = Layout.from_template("half-body", 4, 512, 512)  # 4 people, 3 identities

    conditions = group_conditions(layout, 3, width=768, height=512)

    assert conditions.control_image.size == (768, 512)
    assert np.array_equal(np.asarray(conditions.control_image), np.asarray(conditions.layout.render_skeleton()))
    assert conditions.id_masks.shape == (3, 512, 768) and conditions.id_masks.dtype == torch.float32
    assert [p.identity for p in conditions.layout.people] == [0, 1, 2, None]
    assert any("4 people but 3 identities" in w for w in conditions.warnings)
    centres = [float((m.sum(0) * torch.arange(768)).sum() / m.sum()) for m in conditions.id_masks]
    assert centres == sorted(centres) and centres[0] > 128  # pillarboxed: the square layout sits in the middle
    with pytest.raises(LayoutError, match="identity 4 has no person"):
        group_conditions(Layout.from_template("standing", 3), 4)
