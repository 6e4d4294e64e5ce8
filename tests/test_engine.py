"""The MagicID facade on the tiny profile with real face models and real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from magicid.config import GenerationConfig, ProfileConfig
from magicid.engine import MagicID
from magicid.errors import InvalidSettingError, MagicIDError, NoFaceError


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


def test_small_faces_keep_the_identity_the_layout_put_there():
    from magicid.engine import layout_assignment
    from magicid.perception import Face

    def face(x0, y0, x1, y1):
        return Face(box=np.array([x0, y0, x1, y1], float), score=0.99, kps5=np.zeros((5, 2)))

    boxes = [np.array([0, 0, 50, 50], float), None, np.array([100, 0, 150, 50], float)]
    faces = [face(105, 5, 150, 45), face(300, 300, 340, 340), face(2, 2, 45, 48)]
    assert layout_assignment(faces, boxes) == [2, None, 0]
