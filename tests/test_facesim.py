"""FaceSim on a real two-person photo: the IoU > 0.5 rule, missing, misplaced and cloned identities."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magicid.face_regions import iou
from magicid.facesim import FaceMatch, face_sim, mean_face_sim
from magicid.imageio import load_image
from magicid.perception import detect_faces, get_face_embedder, main_face
from magicid.perception.analysis import ImageAnalysis


@pytest.fixture(scope="module")
def references(testdata):
    """Embeddings of Obama and Biden from their own portraits (not from the group photo)."""
    embedder = get_face_embedder()
    rows = []
    for person in ("barack_obama/3.jpg", "joe_biden/1.jpg"):
        image = load_image(testdata / "portraits" / person)
        rows.append(embedder.embed(image, main_face(image)[0]))
    return rows


@pytest.fixture(scope="module")
def standing(testdata):
    """Obama (left) and Biden (right), their face boxes left to right."""
    image = load_image(testdata / "group/obama_biden_standing.jpg")
    faces = sorted(detect_faces(image), key=lambda face: face.box[0])
    assert len(faces) == 2
    return image, faces


def test_iou_of_boxes():
    a = np.array([0, 0, 10, 10])
    assert iou(a, a) == 1.0
    assert iou(a, np.array([20, 20, 30, 30])) == 0.0
    assert iou(a, np.array([5, 0, 15, 10])) == pytest.approx(50 / 150)
    assert iou(a, np.array([3, 3, 3, 3])) == 0.0


def test_faces_in_their_regions_score_their_identity(standing, references):
    image, faces = standing
    regions = [face.box + np.array([-8, -8, 8, 8]) for face in faces]
    matches = face_sim(ImageAnalysis(image, faces), regions, references)
    assert [m.status for m in matches] == ["ok", "ok"]
    assert all(m.iou > 0.5 for m in matches)
    swapped = face_sim(ImageAnalysis(image, faces), regions[::-1], references)
    for right, wrong in zip(matches, swapped):
        assert right.similarity > wrong.similarity + 0.05
    assert mean_face_sim(matches) > mean_face_sim(swapped)


def test_face_outside_its_region_scores_zero(standing, references):
    image, faces = standing
    empty_corner = np.array([0, 0, 120, 120])
    shifted = faces[1].box + np.array([0.6, 0, 0.6, 0]) * faces[1].size  # IoU with Biden's face < 0.5
    matches = face_sim(ImageAnalysis(image, faces), [empty_corner, shifted], references)
    obama, biden = matches
    assert obama == FaceMatch(0, 0.0, 0.0, None, "misplaced")  # Obama is in the photo, just not in his region
    assert biden.similarity == 0.0 and biden.status in ("missing", "misplaced") and biden.iou < 0.5


def test_identity_absent_from_photo_is_missing(testdata, standing):
    image, faces = standing
    stranger = load_image(testdata / "portraits/yang_mi/1.jpg")
    reference = get_face_embedder().embed(stranger, main_face(stranger)[0])
    (match,) = face_sim(ImageAnalysis(image, faces), [np.array([0, 0, 120, 120])], [reference])
    assert match.status == "missing" and match.similarity == 0.0


def test_cloned_identity_is_flagged_duplicate(testdata, references):
    portrait = load_image(testdata / "portraits/barack_obama/3.jpg").resize((740, 416))
    twins = Image.new("RGB", (1480, 416))
    twins.paste(portrait, (0, 0))
    twins.paste(portrait, (740, 0))
    faces = sorted(detect_faces(twins), key=lambda face: face.box[0])
    assert len(faces) == 2
    (match,) = face_sim(twins, [faces[0].box], references[:1])
    assert match.status == "duplicate" and match.similarity > 0.9


def test_no_faces_at_all_is_missing(references):
    blank = Image.new("RGB", (256, 256), (90, 120, 150))
    matches = face_sim(blank, [np.array([10, 10, 100, 100])] * 2, references)
    assert [m.status for m in matches] == ["missing", "missing"] and mean_face_sim(matches) == 0.0


def test_regions_and_references_must_pair_up(standing, references):
    image, faces = standing
    with pytest.raises(ValueError, match="2 regions but 1 references"):
        face_sim(ImageAnalysis(image, faces), [faces[0].box, faces[1].box], references[:1])
