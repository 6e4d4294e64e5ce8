"""Dense landmarks, the MediaPipe-face ControlNet condition image and soft face-region masks on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from magicid.imageio import load_image
from magicid.perception import Face, detect_faces, draw_face_landmarks, face_landmarks, face_region_mask
from magicid.perception.landmarks import (
    HEAD_RGB,
    LEFT_IRIS_RGB,
    MOUTH_RGB,
    RIGHT_IRIS_RGB,
    dlib_landmarks,
)


MASK_PHOTOS = ["group/friends_cast.jpg", "group/voc_couple.jpg", "fullbody/truck_unloading.jpg"]


@pytest.fixture(scope="module")
def portrait(testdata):
    image = load_image(testdata / "portraits/sundar_pichai/2.jpg")
    face = detect_faces(image)[0]
    return image, face, face_landmarks(image, face)


@pytest.fixture(scope="module")
def faces_by_photo(testdata):
    found = {}
    for name in MASK_PHOTOS:
        image = load_image(testdata / name)
        faces = detect_faces(image)
        found[name] = (image, [(face, face_landmarks(image, face)) for face in faces])
    return found


def _inside(points: np.ndarray, box: np.ndarray, margin: float) -> float:
    x0, y0, x1, y1 = box
    grow = margin * max(x1 - x0, y1 - y0)
    low, high = np.array([x0 - grow, y0 - grow]), np.array([x1 + grow, y1 + grow])
    return float(np.all((points >= low) & (points <= high), axis=1).mean())


def test_mesh_landmarks_lie_on_the_face(portrait):
    _, face, points = portrait
    assert points.shape == (478, 2)
    assert _inside(points, face.box, margin=0.2) == 1.0
    (lx, ly), (rx, ry) = face.kps5[0], face.kps5[1]
    left_iris, right_iris = points[473], points[468]  # subject's left eye is on the image's right
    assert np.hypot(right_iris[0] - lx, right_iris[1] - ly) < 0.1 * face.size
    assert np.hypot(left_iris[0] - rx, left_iris[1] - ry) < 0.1 * face.size


def test_every_group_face_gets_dense_landmarks(faces_by_photo):
    for name, (_, rows) in faces_by_photo.items():
        for face, points in rows:
            assert points.shape in ((478, 2), (68, 2)), name
            assert _inside(points, face.box, margin=0.3) > 0.95, name


def test_dlib_fallback_gives_68_points(portrait):
    image, face, _ = portrait
    points = dlib_landmarks(image, face)
    assert points.shape == (68, 2)
    assert _inside(points, face.box, margin=0.2) == 1.0
    assert points[8, 1] > points[30, 1] > points[19, 1]  # chin below nose tip below brow


def test_condition_image_uses_the_annotator_style(portrait):
    image, face, points = portrait
    condition = np.asarray(draw_face_landmarks([points], *image.size))
    assert condition.shape == (image.height, image.width, 3)
    colours = {tuple(c) for c in condition.reshape(-1, 3)}
    for colour in (HEAD_RGB, MOUTH_RGB, LEFT_IRIS_RGB, RIGHT_IRIS_RGB):
        assert colour in colours
    assert (condition.sum(axis=2) > 0).mean() < 0.1  # thin lines on black
    drawn = np.argwhere(condition.sum(axis=2) > 0)
    assert _inside(drawn[:, ::-1].astype(float), face.box, margin=0.2) == 1.0


def test_condition_image_draws_several_faces_and_dlib_points(faces_by_photo, portrait):
    image, rows = faces_by_photo["group/friends_cast.jpg"]
    condition = np.asarray(draw_face_landmarks([points for _, points in rows], *image.size))
    for face, _ in rows:
        x0, y0, x1, y1 = face.box.astype(int)
        assert condition[y0:y1, x0:x1].any()
    p_image, p_face, _ = portrait
    dlib_condition = np.asarray(draw_face_landmarks([dlib_landmarks(p_image, p_face)], *p_image.size))
    assert HEAD_RGB in {tuple(c) for c in dlib_condition.reshape(-1, 3)}


@pytest.mark.parametrize("name", MASK_PHOTOS)
def test_masks_cover_the_face_box_and_stay_in_the_image(faces_by_photo, name):
    image, rows = faces_by_photo[name]
    for face, points in rows:
        mask = face_region_mask(image, face, points)
        assert mask.shape == (image.height, image.width) and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        x0, y0, x1, y1 = face.box.round().astype(int)
        assert (mask[y0:y1, x0:x1] > 0.5).mean() > 0.6, f"{name}: mask covers too little of the face box"
        cx, cy = face.center.astype(int)
        assert mask[cy, cx] > 0.9
        grow = int(face.size)
        outside = np.ones_like(mask, dtype=bool)
        outside[max(0, y0 - grow) : y1 + grow, max(0, x0 - grow) : x1 + grow] = False
        assert mask[outside].max(initial=0.0) < 0.01, f"{name}: mask leaks far outside the face"


def test_mask_at_image_border_is_clipped(testdata):
    image = load_image(testdata / "portraits/sundar_pichai/2.jpg")
    face = detect_faces(image)[0]
    cut = int(face.center[0])
    half = image.crop((cut, 0, image.width, image.height))  # the left half of the face is outside the frame
    shift = np.array([cut, 0])
    half_face = Face(box=np.clip(face.box - np.tile(shift, 2), 0, None), score=face.score, kps5=face.kps5 - shift)
    mask = face_region_mask(half, half_face)
    assert mask.shape == (half.height, half.width)
    assert mask[int(half_face.center[1]), :5].max() > 0.5
