"""The MagicID facade on the tiny profile with real face models and real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magicid.config import GenerationConfig, ProfileConfig
from magicid.engine import MagicID
from magicid.errors import InvalidSettingError, MagicIDError, NoFaceError
from magicid.layout import Layout
from magicid.perception.analysis import ImageAnalysis


FAST = dict(steps=2, restore_small_faces=False)


@pytest.fixture(scope="module")
def engine() -> MagicID:
    return MagicID.from_profile(ProfileConfig(name="tiny"))


@pytest.fixture(scope="module")
def obama(engine, testdata):
    photos = [testdata / "portraits/barack_obama/1.jpg", testdata / "portraits/barack_obama/2.jpg"]
    return engine.encode_identity(photos, name="Barack")


@pytest.fixture(scope="module")
def biden(engine, testdata):
    return engine.encode_identity([testdata / "portraits/joe_biden/1.jpg"], name="Joe")


def test_from_profile_loads_nothing_and_says_it_is_miniature():
    engine = MagicID.from_profile("tiny")
    assert engine._models is None and engine.is_miniature
    assert "miniature" in engine.banner() and "not photographs" in engine.banner()
    with pytest.raises(InvalidSettingError, match="Unknown profile"):
        MagicID.from_profile("huge")


def test_encode_identity_averages_photos(obama, engine):
    assert obama.name == "Barack" and len(obama.clip_images) == 2
    assert obama.embedding.shape == (engine.identity_encoder.embedder.dim,)
    assert abs(float(np.linalg.norm(obama.embedding)) - 1.0) < 1e-5
    assert obama.clip_images[0].size == (224, 224) and obama.thumbnail.size == (128, 128)
    tokens = engine.identity_encoder.id_tokens([obama])
    assert tokens.shape == (1, 4, 32)


def test_photo_without_a_face_is_named(engine, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (300, 300), (120, 130, 140)).save(blank)
    with pytest.raises(NoFaceError, match="wall.png"):
        engine.encode_identity([blank])


def test_group_photo_end_to_end(engine, obama, biden):
    config = GenerationConfig(prompt="two men on a stage", seed=3, **FAST)
    ticks = []
    result = engine.generate(config, [obama, biden], progress=lambda done, total: ticks.append((done, total)))
    assert len(result.images) == 1 and result.images[0].size == (512, 512)
    assert ticks == [(1, 2), (2, 2)]
    captions = [caption for _, caption in result.debug_images]
    assert any("skeleton" in caption for caption in captions) and any("M_id" in caption for caption in captions)
    assert sorted(match.identity for match in result.report) == [0, 1]
    assert result.parameters["seed"] == 3 and result.parameters["identities"] == ["Barack", "Joe"]
    assert result.parameters["profile"] == "tiny" and result.parameters["miniature"] is True
    assert any("Miniature untrained model" in message for message in result.messages)


def test_restoration_is_delegated_to_diir(engine, obama, monkeypatch):
    from magicid import diir

    calls = []

    def fake_restore(pipe, encoder, image, references, config, faces=None, assignment=None, progress=None):
        calls.append(references)
        return diir.RestorationResult(image=Image.new("RGB", image.size, "white"), messages=["restored"])

    monkeypatch.setattr(diir, "restore", fake_restore)
    result = engine.generate(GenerationConfig(prompt="a man", steps=1, restore_small_faces=True), [obama])
    assert calls == [[obama]] and result.parameters["restore_small_faces"] is True
    assert np.asarray(result.images[0]).min() == 255 and "restored" in result.messages


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(width=500), "width 500"),
        (dict(height=2048), "height 2048"),
        (dict(steps=0), "steps"),
        (dict(num_images=100), "num_images"),
    ],
)
def test_bad_settings_fail_before_loading(settings, message, obama):
    fresh = MagicID.from_profile("tiny")
    with pytest.raises(InvalidSettingError, match=message):
        fresh.generate(GenerationConfig(prompt="x", **settings), [obama])
    assert fresh._models is None


def test_no_identity_is_refused(engine):
    with pytest.raises(MagicIDError, match="at least one identity"):
        engine.generate(GenerationConfig(prompt="x", **FAST), [])


def test_small_faces_keep_the_identity_the_layout_put_there(engine, obama, biden, monkeypatch):
    from magicid import diir
    from magicid.perception import Face

    def face(x0, y0, x1, y1):
        return Face(box=np.array([x0, y0, x1, y1], float), score=0.99, kps5=np.zeros((5, 2)))

    layout = Layout.from_template("standing", 2, 512, 512).assign_identities(2)
    left, right = layout.identity_boxes(2)
    stranger = face(480, 480, 500, 500)
    small = [face(*right), stranger, face(*left)]
    monkeypatch.setattr(ImageAnalysis, "faces_smaller_than", lambda analysis, threshold: small)
    calls = []

    def fake_restore(pipe, encoder, image, references, config, faces=None, assignment=None, progress=None):
        calls.append((faces, assignment))
        return diir.RestorationResult(image=image.image)

    monkeypatch.setattr(diir, "restore", fake_restore)
    engine.generate(GenerationConfig(prompt="two men", steps=1, restore_small_faces=True), [obama, biden], layout)
    (faces, assignment), = calls
    assert assignment == [0, 1] and all(chosen is not stranger for chosen in faces)
    assert np.allclose(faces[0].box, left) and np.allclose(faces[1].box, right)


@pytest.fixture(scope="module")
def standing_pair(testdata):
    """Obama (left) and Biden (right), faces about 200 px wide (above DIIR's small-face threshold), and their layout."""

    image = Image.open(testdata / "group" / "obama_biden_standing.jpg").convert("RGB")
    return image, Layout.from_photo(image, width=image.width, height=image.height).assign_identities(2)


def _recording_restore(monkeypatch, calls: list):
    from magicid import diir

    def fake_restore(pipe, encoder, image, references, config, faces=None, assignment=None, progress=None, limits=None):
        calls.append(dict(references=references, faces=faces, assignment=assignment, config=config))
        return diir.RestorationResult(image=image.image, messages=["restored"], analysis=image)

    monkeypatch.setattr(diir, "restore", fake_restore)


def test_fix_faces_restores_each_failing_identity_in_its_region_whatever_its_size(
    engine, obama, biden, standing_pair, monkeypatch
):
    from magicid.config import DIIRConfig
    from magicid.face_regions import iou

    image, layout = standing_pair
    calls = []
    _recording_restore(monkeypatch, calls)
    config = DIIRConfig(steps=3)
    result = engine.fix_faces(image, [biden, obama], layout, config)  # swapped: both fail the identity check
    (call,) = calls
    assert call["assignment"] == [0, 1] and call["references"] == [biden, obama] and call["config"] is config
    boxes = layout.identity_boxes(2)
    assert [iou(face.box, boxes[i]) > 0.9 for face, i in zip(call["faces"], call["assignment"])] == [True, True]
    assert all(face.size > config.threshold_px for face in call["faces"])
    assert result.messages == ["restored"]


def test_fix_faces_leaves_a_passing_image_unchanged(engine, obama, biden, standing_pair, monkeypatch):
    image, layout = standing_pair
    calls = []
    _recording_restore(monkeypatch, calls)
    result = engine.fix_faces(image, [obama, biden], layout)
    assert calls == [] and np.array_equal(np.asarray(result.image), np.asarray(image))
    assert "passes the identity check" in result.messages[0]


def test_fix_faces_skips_an_identity_without_a_face_in_its_region(engine, obama, monkeypatch):

    calls = []
    _recording_restore(monkeypatch, calls)
    layout = Layout.from_template("standing", 1, 256, 256).assign_identities(1)
    result = engine.fix_faces(Image.new("RGB", (256, 256), (90, 120, 150)), [obama], layout)
    assert calls == [] and "Barack: no face overlaps their region" in result.messages[0]


def test_faces_for_identities_picks_the_best_overlap_and_uses_each_face_once():
    from magicid.engine import faces_for_identities
    from magicid.perception import Face

    def face(x0, y0, x1, y1):
        return Face(box=np.array([x0, y0, x1, y1], float), score=0.99, kps5=np.zeros((5, 2)))

    faces = [face(0, 0, 40, 40), face(100, 0, 150, 50), face(20, 0, 60, 40)]
    boxes = [np.array([100, 0, 150, 50], float), np.array([25, 0, 60, 40], float), np.array([0, 0, 40, 40], float)]
    chosen, assignment, skipped = faces_for_identities(faces, boxes, [1, 2])
    assert [c is f for c, f in zip(chosen, (faces[2], faces[0]))] == [True, True] and assignment == [1, 2]
    chosen, assignment, skipped = faces_for_identities(faces[:1], boxes, [0, 2, 1])
    assert chosen == [faces[0]] and assignment == [2] and skipped == [0, 1]


def test_fix_faces_runs_diir_on_the_tiny_model(engine, obama, biden, standing_pair):
    from magicid.config import DIIRConfig

    image, layout = standing_pair
    small = image.resize((image.width // 2, image.height // 2))
    result = engine.fix_faces(small, [biden, obama], layout, DIIRConfig(steps=2, resolution=64))
    assert result.image.size == small.size and sorted(face.reference for face in result.faces) == [0, 1]
    assert any(message.startswith("Restored face") for message in result.messages)


def test_one_request_analyses_each_image_once(engine, obama, biden, standing_pair, monkeypatch):
    """Fixing faces and checking the result detects faces once in the photo and once in the result, and embeds
    each face once: the identity check, DIIR's matching, the measurement after and the report share the analysis."""
    from magicid.config import DIIRConfig
    from magicid.perception import analysis

    detections, embeddings = [], []
    detect, embedder = analysis.detect_faces, engine.identity_encoder.embedder
    embed = embedder.embed
    monkeypatch.setattr(analysis, "detect_faces", lambda image, limits=None: detections.append(image) or detect(image))
    monkeypatch.setattr(embedder, "embed", lambda image, face: embeddings.append((id(image), tuple(face.box))) or
                        embed(image, face))  # fmt: skip
    image, layout = standing_pair
    small = image.resize((image.width // 2, image.height // 2))
    result = engine.fix_faces(small, [biden, obama], layout, DIIRConfig(steps=2, resolution=64))
    report = engine.check_identities(result.analysis, [biden, obama], layout)
    assert len(report) == 2 and len(detections) == 2 and detections[1] is result.image
    assert len(embeddings) == len(set(embeddings)) >= 2  # each face of the photo, and of the result, once


class PipeSpy:
    """The engine's pipeline, recording the keywords of each call; `id_mode` may be overridden."""

    def __init__(self, pipe, id_mode: str | None = None):
        self.pipe, self.calls, self.id_mode = pipe, [], id_mode or pipe.id_mode

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def generate_with_spy(engine, monkeypatch, identities, layout=None, id_mode=None, **settings) -> tuple[dict, object]:
    pipe, encoder = engine._load()
    spy = PipeSpy(pipe, id_mode)
    monkeypatch.setattr(engine, "_load", lambda: (spy, encoder))
    engine.generate(GenerationConfig(prompt="two men", **FAST, **settings), identities, layout)
    return spy.calls[0], encoder


def test_a_group_gets_each_identity_s_tokens_with_the_mask_of_its_own_region(engine, obama, biden, monkeypatch):
    layout = Layout.from_template("standing", 2, 512, 512).assign_identities(2)
    layout.people[0].identity, layout.people[1].identity = 1, 0  # Joe on the left, Barack on the right
    call, encoder = generate_with_spy(engine, monkeypatch, [obama, biden], layout)
    masks = np.asarray(call["id_masks"])
    assert masks.shape == (2, 512, 512)
    for index, box in enumerate(layout.identity_boxes(2)):
        ys, xs = np.nonzero(masks[index] > 0.5)
        assert box[0] < xs.mean() < box[2] and box[1] < ys.mean() < box[3]  # mask i sits on identity i's face
    expected = encoder.id_tokens([obama, biden])
    assert np.allclose(np.asarray(call["id_embeds"]), np.asarray(expected))
    assert call["negative_id_embeds"] is None  # MagicID's own ID attention: zero tokens, as in ID dropout


def test_the_mgmica_ablation_lets_every_identity_attend_everywhere(engine, obama, biden, monkeypatch):
    call, _ = generate_with_spy(engine, monkeypatch, [obama, biden], masked_id_attention=False)
    assert call["id_masks"] is None and np.asarray(call["id_embeds"]).shape[0] == 2


def test_the_ip_adapter_baseline_gets_null_id_tokens_in_the_unconditional_branch(engine, obama, biden, monkeypatch):
    call, encoder = generate_with_spy(engine, monkeypatch, [obama, biden], id_mode="unet")
    assert np.allclose(np.asarray(call["negative_id_embeds"]), np.asarray(encoder.null_tokens(2)))


def test_the_openpose_controlnet_of_the_hub_gets_skeletons_without_face_landmarks(
    engine, obama, biden, standing_pair, monkeypatch
):
    """A layout from a photo carries face landmarks: MMF was trained on them, the public OpenPose ControlNet not."""
    from magicid.group import group_conditions

    _, layout = standing_pair
    assert layout.has_face_landmarks()
    magicid_call, _ = generate_with_spy(engine, monkeypatch, [obama, biden], layout)
    hub_call, _ = generate_with_spy(engine, monkeypatch, [obama, biden], layout, id_mode="unet")
    skeleton_only = group_conditions(layout, 2, 512, 512, face_landmarks=False).control_image
    assert np.array_equal(np.asarray(hub_call["image"]), np.asarray(skeleton_only))
    assert not np.array_equal(np.asarray(magicid_call["image"]), np.asarray(skeleton_only))


def test_a_model_below_512_px_runs_the_layout_at_its_own_scale():
    from magicid.engine import at_model_scale

    config = GenerationConfig(prompt="p", width=1024, height=512, restore_threshold_px=100)
    layout = Layout.from_template("portrait", 2, 1024, 512)
    scaled, fitted, note = at_model_scale(config, layout, native_side=128)
    assert (scaled.width, scaled.height, scaled.restore_threshold_px) == (256, 128, 25)
    assert (fitted.width, fitted.height) == (256, 128) and "256x128" in note
    boxes, small = layout.identity_boxes(2), fitted.identity_boxes(2)
    assert np.allclose(np.asarray(small) * 4, np.asarray(boxes), atol=1.0)
    assert at_model_scale(config, layout, native_side=512) == (config, layout, "")
