"""Faces on real photos: counts, small faces, alignment, identity verification, user-facing face errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from magicid.errors import MissingWeightsError, NoFaceError
from magicid.imageio import load_image
from magicid.perception import (
    DlibEmbedder,
    Face,
    align_face,
    detect_faces,
    get_face_embedder,
    identity_similarity,
    main_face,
    photo_similarity,
)


# Face counts from testdata/SOURCES.md. Photos whose notes mention partial or background people may show up to
# EXTRA_ALLOWED more faces; all others must match exactly.
EXPECTED_FACES = {
    "group/friends_cast.jpg": (6, 0),
    "group/jolie_pitt_couple.jpg": (2, 0),
    "group/obama_biden_stage.jpg": (2, 1),  # + 1 partial child at the right edge
    "group/obama_biden_standing.jpg": (2, 0),
    "group/voc_couple.jpg": (2, 0),
    "group/voc_three_adults.jpg": (3, 0),
    "group/voc_three_friends.jpg": (3, 0),
    "fullbody/airport_walkers.jpg": (3, 2),  # + partial background people
    "fullbody/family_three.jpg": (3, 0),
    "fullbody/man_by_truck.jpg": (1, 0),
    "fullbody/soccer_match.jpg": (3, 2),  # + tiny background people
    "fullbody/truck_unloading.jpg": (2, 0),
    "fullbody/voc_elvis_group.jpg": (7, 0),
}
VERIFICATION_AUC_FLOOR = 0.9  # a random or constant embedder scores ~0.5


@pytest.fixture(scope="module")
def portrait_embeddings(testdata):
    """(person, embedding) for every portrait, computed once for the module."""
    embedder = get_face_embedder()
    rows = []
    for path in sorted((testdata / "portraits").glob("*/*.jpg")):
        image = load_image(path)
        face, warnings = main_face(image)
        assert warnings == [], f"{path}: {warnings}"
        rows.append((path.parent.name, embedder.embed(image, face)))
    return rows


@pytest.mark.parametrize("relative", sorted(EXPECTED_FACES))
def test_face_counts_match_sources(testdata, relative):
    expected, extra_allowed = EXPECTED_FACES[relative]
    image = load_image(testdata / relative)
    faces = detect_faces(image)
    assert expected <= len(faces) <= expected + extra_allowed, f"{relative}: {len(faces)} faces"
    sizes = [face.size for face in faces]
    assert sizes == sorted(sizes, reverse=True)
    for face in faces:
        assert np.all(face.box >= 0) and face.box[2] <= image.width and face.box[3] <= image.height
        assert face.kps5.shape == (5, 2) and 0.9 <= face.score <= 1.0


def test_small_faces_in_full_body_photo_are_found(testdata):
    faces = detect_faces(load_image(testdata / "fullbody/truck_unloading.jpg"))
    assert len(faces) == 2 and max(face.size for face in faces) < 40  # SOURCES: 2 faces of ~30 px


def test_five_points_follow_arcface_order(testdata):
    face, _ = main_face(load_image(testdata / "portraits/barack_obama/1.jpg"))
    left_eye, right_eye, nose, left_mouth, right_mouth = face.kps5
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    x0, y0, x1, y1 = face.box
    assert np.all((face.kps5 >= [x0, y0]) & (face.kps5 <= [x1, y1]))


def test_huge_image_coordinates_map_back(testdata):
    image = load_image(testdata / "group/voc_three_friends.jpg")
    # 2000 px wide: downscaled for detection, boxes mapped back
    big = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
    small_boxes = sorted(face.box[0] for face in detect_faces(image))
    big_boxes = sorted(face.box[0] for face in detect_faces(big))
    assert len(big_boxes) == len(small_boxes) == 3
    np.testing.assert_allclose(np.array(big_boxes) / 4, small_boxes, atol=8)


@pytest.mark.parametrize("size", [112, 224])
def test_align_face_puts_eyes_on_arcface_template(testdata, size):
    image = load_image(testdata / "portraits/joe_biden/1.jpg")
    face, _ = main_face(image)
    aligned = align_face(image, face, size)
    assert aligned.size == (size, size) and aligned.mode == "RGB"
    canvas = Image.new("RGB", (3 * size, 3 * size), (128, 128, 128))  # margin: MTCNN needs context around a face
    canvas.paste(aligned, (size, size))
    realigned = detect_faces(canvas)
    assert realigned, "no face found in the aligned crop"
    eyes = realigned[0].kps5[:2] - size
    template_eyes = np.array([[38.2946, 51.6963], [73.5318, 51.5014]]) * size / 112  # ArcFace reference points
    np.testing.assert_allclose(eyes, template_eyes, atol=0.06 * size)


def test_face_size_and_normalised_box():
    face = Face(box=np.array([10.0, 20.0, 50.0, 80.0]), score=0.99, kps5=np.zeros((5, 2)))
    assert face.size == 60.0
    np.testing.assert_allclose(face.box_norm(100, 200), [0.1, 0.1, 0.5, 0.4])


def test_identity_verification_over_all_portrait_pairs(portrait_embeddings):
    same, different = [], []
    for (person_a, a), (person_b, b) in itertools.combinations(portrait_embeddings, 2):
        (same if person_a == person_b else different).append(identity_similarity(a, b))
    same, different = np.array(same), np.array(different)
    auc = float((same[:, None] > different[None, :]).mean())
    thresholds = np.concatenate([same, different])
    accuracy = max(
        ((same >= t).sum() + (different < t).sum()) / (len(same) + len(different)) for t in thresholds
    )
    print(f"identity verification ({get_face_embedder().name}): AUC {auc:.3f}, best accuracy {accuracy:.3f}, "
          f"{len(same)} same / {len(different)} different pairs")  # fmt: skip
    assert auc > VERIFICATION_AUC_FLOOR
    assert same.mean() > different.mean() + 0.05


def test_embeddings_are_unit_vectors(portrait_embeddings):
    embedder = get_face_embedder()
    for _, embedding in portrait_embeddings:
        assert embedding.shape == (embedder.dim,) and embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-4


def test_photo_similarity_same_person_beats_other_person(testdata):
    yang_a = load_image(testdata / "portraits/yang_mi/1.jpg")
    yang_b = load_image(testdata / "portraits/yang_mi/3.jpg")
    jolie = load_image(testdata / "portraits/angelina_jolie/3.jpg")
    assert photo_similarity(yang_a, yang_b) > photo_similarity(yang_a, jolie) + 0.05


def test_several_faces_warn_and_use_the_largest(testdata):
    image = load_image(testdata / "group/voc_couple.jpg")
    face, warnings = main_face(image)
    assert face.size == max(f.size for f in detect_faces(image))
    assert warnings == ["2 faces found in voc_couple.jpg; using the largest"]


def test_no_face_raises_actionable_error(testdata):
    image = load_image(testdata / "fullbody/truck_unloading.jpg").crop((0, 0, 220, 480))  # street and sign only
    image.info["source"] = "street.jpg"
    with pytest.raises(NoFaceError, match=r"^No face found in street.jpg: upload a photo where the face is visible$"):
        main_face(image)


def test_embedder_selection_without_arcface_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MAGICID_INSIGHTFACE_ROOT", str(tmp_path))
    assert isinstance(get_face_embedder("auto"), DlibEmbedder)
    assert get_face_embedder("dlib").dim == 128
    with pytest.raises(MissingWeightsError, match="w600k_r50.onnx.*glintr100.onnx"):  # buffalo_l first
        get_face_embedder("arcface")
    with pytest.raises(MissingWeightsError, match=f"{tmp_path}/elsewhere/models/buffalo_l/w600k_r50.onnx"):
        get_face_embedder("arcface", root=tmp_path / "elsewhere")


def test_detection_is_safe_from_several_threads(testdata):
    from concurrent.futures import ThreadPoolExecutor

    image = load_image(testdata / "group/voc_couple.jpg")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(detect_faces, [image] * 3))
    boxes = [np.stack([face.box for face in faces]) for faces in results]
    assert all(len(b) == 2 for b in boxes)
    np.testing.assert_allclose(boxes[0], boxes[1])
    np.testing.assert_allclose(boxes[0], boxes[2])


def _write_tiny_arcface_onnx(path, weight: np.ndarray) -> None:
    """A 112x112 -> 512 ONNX with the shape contract of insightface's recognition models (mean colour @ weight)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "weight"], ["fc1"]),
        ],
        "tiny_arcface",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, ["None", 512])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def test_arcface_embedder_runs_insightface_onnx_on_the_aligned_crop(testdata, tmp_path, monkeypatch):
    weight = np.random.default_rng(0).normal(size=(3, 512))
    _write_tiny_arcface_onnx(tmp_path / "models/buffalo_l/w600k_r50.onnx", weight)
    monkeypatch.setenv("MAGICID_INSIGHTFACE_ROOT", str(tmp_path))
    embedder = get_face_embedder("auto")
    assert (embedder.name, embedder.dim) == ("arcface", 512)
    assert get_face_embedder("arcface") is embedder
    image = load_image(testdata / "portraits/yang_mi/1.jpg")
    face, _ = main_face(image)
    embedding = embedder.embed(image, face)
    mean_rgb = (np.asarray(align_face(image, face, 112), dtype=np.float64).mean(axis=(0, 1)) - 127.5) / 127.5
    expected = mean_rgb @ weight
    np.testing.assert_allclose(embedding, expected / np.linalg.norm(expected), atol=1e-4)
    assert embedding.dtype == np.float32


class _FakeScrfd:
    """Stands in for insightface's SCRFD: two faces in the detection copy's pixels, one below its threshold."""

    def __init__(self):
        self.calls = []

    def detect(self, bgr: np.ndarray, input_size: tuple[int, int]):
        self.calls.append((bgr.shape, input_size))
        detections = np.array([[100, 100, 140, 150, 0.95], [300, 80, 420, 230, 0.88], [10, 10, 20, 20, 0.3]])
        points = np.tile(np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]), (3, 1, 1))
        points = points * (detections[:, None, 2:4] - detections[:, None, :2]) + detections[:, None, :2]
        return detections.astype(np.float32), points.astype(np.float32)


def test_insightface_detector_is_used_when_present(monkeypatch):
    from magicid.perception import models

    fake = _FakeScrfd()
    monkeypatch.setattr(models, "scrfd", lambda: fake)
    image = Image.new("RGB", (2560, 1440))  # detection copy: 1280 x 720, so coordinates double on the way back
    faces = detect_faces(image)
    assert fake.calls == [((720, 1280, 3), (1280, 736))]
    assert [face.score for face in faces] == pytest.approx([0.88, 0.95])  # largest first, 0.3 dropped
    np.testing.assert_allclose(faces[0].box, [600, 160, 840, 460])
    np.testing.assert_allclose(faces[1].kps5[0], [(100 + 0.3 * 40) * 2, (100 + 0.4 * 50) * 2], rtol=1e-5)


def test_insightface_detector_is_found_in_its_pack(tmp_path, monkeypatch):
    from magicid.perception import models

    monkeypatch.setenv("MAGICID_INSIGHTFACE_ROOT", str(tmp_path))
    assert models.find_scrfd_model() is None and models.scrfd() is None
    (tmp_path / "models/antelopev2").mkdir(parents=True)
    (tmp_path / "models/antelopev2/scrfd_10g_bnkps.onnx").write_bytes(b"")
    assert models.find_scrfd_model() == tmp_path / "models/antelopev2/scrfd_10g_bnkps.onnx"
    (tmp_path / "models/buffalo_l").mkdir(parents=True)
    (tmp_path / "models/buffalo_l/det_10g.onnx").write_bytes(b"")
    assert models.find_scrfd_model() == tmp_path / "models/buffalo_l/det_10g.onnx"  # IP-Adapter-FaceID's pack first
