"""DIIR end to end on real photos with the tiny profile: face finding, matching, batching, exact paste-back."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from magicid import diir
from magicid.config import DIIRConfig
from magicid.errors import MagicIDError
from magicid.identity import IdentityEncoder
from magicid.perception import get_face_embedder
from magicid.profiles import build_tiny_pipeline
from magicid.resampler import IDResampler


FAST = DIIRConfig(steps=2, resolution=64)  # 8 x 8 latents: the algorithm, not the picture, is under test
# the family photo's people are strangers to the references: restore them anyway, one reference for several faces
ANY_MATCH = DIIRConfig(steps=2, resolution=64, min_similarity=-1.0, reuse_references=True)


@pytest.fixture(scope="module")
def models(tiny_components):
    pipe = build_tiny_pipeline(tiny_components)
    embedder = get_face_embedder()
    resampler = IDResampler.tiny(id_embeddings_dim=embedder.dim)
    return pipe, IdentityEncoder(resampler, pipe.image_encoder, pipe.feature_extractor, embedder)


@pytest.fixture(scope="module")
def references(models, testdata):
    _, encoder = models
    portraits = testdata / "portraits"
    return [
        encoder.encode([portraits / "barack_obama" / "1.jpg"], name="Obama"),
        encoder.encode([portraits / "angelina_jolie" / "4.jpg"], name="Jolie"),
    ]


@pytest.fixture(scope="module")
def fullbody(testdata) -> Image.Image:
    return Image.open(testdata / "fullbody" / "family_three.jpg").convert("RGB")


@pytest.fixture(scope="module")
def restored(models, references, fullbody):
    pipe, encoder = models
    calls = []
    result = diir.restore(pipe, encoder, fullbody, references, ANY_MATCH, progress=lambda done, total: calls.append(total))
    return result, calls


def _union_of_paste_masks(result: diir.RestorationResult, size: tuple[int, int]) -> np.ndarray:
    union = np.zeros(size[::-1], dtype=np.float32)
    for face in result.faces:
        union = np.maximum(union, face.paste_mask_in(size))
    return union


def test_fullbody_photo_small_faces_are_found_and_restored(restored, fullbody):
    result, progress_totals = restored
    assert len(result.faces) == 3  # the three people of the photo, all below 100 px
    assert all(face.face.size < FAST.threshold_px for face in result.faces)
    assert {face.identity for face in result.faces} <= {"Obama", "Jolie"}
    for face in result.faces:  # similarities are measured before (matching) and after (on the face found there)
        assert -1 <= face.similarity_before <= 1
        after = "no face is found there" if face.similarity_after is None else f"reference {face.similarity_after:.2f}"
        assert after in result.messages[face.index]
    assert len(result.messages) == 3
    assert progress_totals and progress_totals[-1] == len(progress_totals) == 2 * FAST.steps
    labels = [label for _, label in result.debug_images]
    for kind in ("crop", "landmarks", "face mask M_p", "before / after"):
        assert sum(label.endswith(kind) for label in labels) == 3
    assert result.image.size == fullbody.size


def test_pixels_outside_the_paste_masks_are_byte_identical(restored, fullbody):
    result, _ = restored
    before, after = np.asarray(fullbody), np.asarray(result.image)
    union = _union_of_paste_masks(result, fullbody.size)
    assert np.array_equal(before[union == 0], after[union == 0])
    changed = (before != after).any(axis=-1)
    assert changed[union > 0.5].mean() > 0.5  # the faces themselves were redrawn
    for face in result.faces:  # each paste mask stays near its face: crop margin, never the whole crop
        assert 0 < (face.paste_mask > 0).mean() < 0.8


def test_image_without_small_faces_comes_back_unchanged(models, references, testdata):
    pipe, encoder = models
    portrait = Image.open(testdata / "portraits" / "barack_obama" / "1.jpg").convert("RGB")
    result = diir.restore(pipe, encoder, portrait, references, FAST)
    assert result.faces == [] and result.debug_images == []
    assert np.array_equal(np.asarray(result.image), np.asarray(portrait))
    assert result.messages == ["No face smaller than 100 px found: the image is unchanged"]


def test_batched_faces_equal_one_by_one(models, references, fullbody, restored):
    pipe, encoder = models
    faces = [face.face for face in restored[0].faces]
    assignment = [0, 1, 0]
    batched = diir.restore(pipe, encoder, fullbody, references, FAST, faces=faces, assignment=assignment)
    single = DIIRConfig(steps=FAST.steps, resolution=FAST.resolution, batch_size=1)
    one_by_one = diir.restore(pipe, encoder, fullbody, references, single, faces=faces, assignment=assignment)
    difference = np.abs(np.asarray(batched.image, dtype=int) - np.asarray(one_by_one.image, dtype=int))
    # batched convolutions round differently in float32; through the untrained model and uint8 rounding that
    # leaves a few values off by a few levels (mixing up faces or identities would change thousands)
    assert difference.max() <= 4
    assert (difference > 0).mean() < 1e-4
    assert [face.identity for face in batched.faces] == ["Obama", "Jolie", "Obama"]


def test_faces_can_be_switched_off_and_bad_input_is_explained(models, references, fullbody, restored):
    pipe, encoder = models
    faces = [face.face for face in restored[0].faces]
    result = diir.restore(pipe, encoder, fullbody, references, FAST, faces=faces, assignment=[None, None, None])
    assert np.array_equal(np.asarray(result.image), np.asarray(fullbody))
    assert result.messages == ["Every face was switched off: the image is unchanged"]
    with pytest.raises(MagicIDError, match="one entry per face"):
        diir.restore(pipe, encoder, fullbody, references, FAST, faces=faces, assignment=[0])
    with pytest.raises(MagicIDError, match="reference 5"):
        diir.restore(pipe, encoder, fullbody, references, FAST, faces=faces, assignment=[5, 0, 0])
    with pytest.raises(MagicIDError, match="No reference"):
        diir.restore(pipe, encoder, fullbody, [], FAST)


def test_unet_processors_are_untouched_after_restoring(models, restored):
    pipe, _ = models
    assert not any(isinstance(p, diir.MGFFSelfAttnProcessor) for p in pipe.unet.attn_processors.values())


def test_restore_crops_with_guidance_and_without_attention_fusion(models):
    pipe, _ = models
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
    conditions = [Image.new("RGB", (64, 64))] * 2
    masks = np.zeros((2, 64, 64), np.float32)
    masks[:, 16:48, 16:48] = 1
    tokens = torch.randn(2, 4, pipe.controlnet.config.cross_attention_dim)
    guided = DIIRConfig(steps=2, resolution=64, guidance_scale=3.0)  # the batch doubles inside the model calls
    plain = DIIRConfig(steps=2, resolution=64, fuse_self_attention=False, fuse_latents=False)
    conditioned = DIIRConfig(steps=2, resolution=64, invert_with_landmarks=True, inversion_refine_iters=1)
    for config in (guided, plain, conditioned):
        restored = diir.restore_crops(pipe, crops, conditions, masks, tokens, config)
        assert [image.size for image in restored] == [(64, 64), (64, 64)]
        assert not np.array_equal(np.asarray(restored[0]), np.asarray(restored[1]))


def test_a_separate_landmark_controlnet_is_used_while_restoring(models):
    """The hub profile's landmark ControlNet (`pipe.landmark_controlnet`) replaces the pose one during DIIR only."""
    pipe, _ = models
    original = pipe.controlnet
    landmark = copy.deepcopy(original)
    calls = []
    landmark.register_forward_hook(lambda module, inputs, output: calls.append(1))
    pipe.landmark_controlnet = landmark
    try:
        crops = [Image.new("RGB", (64, 64), (120, 90, 80))]
        tokens = torch.randn(1, 4, original.config.cross_attention_dim)
        diir.restore_crops(pipe, crops, crops, np.ones((1, 64, 64), np.float32), tokens, DIIRConfig(steps=2))
    finally:
        pipe.landmark_controlnet = None
    assert len(calls) == 2  # the denoising steps; inversion runs the UNet alone by default
    assert pipe.controlnet is original


def random_faces(count: int, pipe):
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(count)]
    masks = np.zeros((count, 64, 64), np.float32)
    for index in range(count):
        masks[index, 8 + 8 * index : 40 + 8 * index, 16:48] = 1  # a different M_p per face
    tokens = torch.randn(count, 4, pipe.controlnet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    return crops, [Image.new("RGB", (64, 64))] * count, masks, tokens


def test_restore_crops_runs_alg2_with_each_face_s_tokens_and_its_own_mask(models, monkeypatch):
    """Spies on the model calls and on MGFF: F_id per face while denoising, self-attention fusion (line 5) on the
    token grids and latent fusion (line 7) toward the inversion, both inside M_p, at every step."""
    from magicid import mgff

    pipe, _ = models
    crops, conditions, masks, tokens = random_faces(2, pipe)
    calls, fusions = [], []
    predict_noise, fuse = pipe.predict_noise, mgff.fuse
    monkeypatch.setattr(pipe, "predict_noise", lambda *args, **kwargs: (calls.append(kwargs), predict_noise(*args, **kwargs))[1])
    monkeypatch.setattr(mgff, "fuse", lambda t, r, m, dims=mgff.LATENT_DIMS: (fusions.append((dims, m)), fuse(t, r, m, dims))[1])
    config = DIIRConfig(steps=3, resolution=64, id_scale=0.8)
    diir.restore_crops(pipe, crops, conditions, masks, tokens, config)
    restoring = [kwargs for kwargs in calls if kwargs.get("id_embeds") is not None]
    assert len(restoring) == config.steps and len(calls) == 2 * config.steps  # inversion runs without F_id
    for kwargs in restoring:
        assert torch.equal(kwargs["id_embeds"], tokens[:, None]) and kwargs["id_scale"] == 0.8
    latent_masks = [mask for dims, mask in fusions if dims == mgff.LATENT_DIMS]
    expected = torch.nn.functional.interpolate(torch.from_numpy(masks[:, None]), (8, 8), mode="area")
    assert len(latent_masks) == config.steps and all(torch.allclose(mask, expected) for mask in latent_masks)
    token_masks = [mask for dims, mask in fusions if dims == mgff.TOKEN_DIMS]
    self_attention_layers = sum(name.endswith("attn1.processor") for name in pipe.unet.attn_processors)
    assert len(token_masks) == config.steps * self_attention_layers
    assert all(0 < mask.mean() < 1 for mask in token_masks)  # M_p on the token grid, not the whole crop


def test_each_face_is_restored_with_the_tokens_of_its_assigned_reference(models, references, fullbody, restored, monkeypatch):
    pipe, encoder = models
    faces = [face.face for face in restored[0].faces[:2]]
    seen = []
    restore_crops = diir.restore_crops
    monkeypatch.setattr(diir, "restore_crops", lambda pipe, crops, conditions, masks, id_tokens, config, progress=None:
                        (seen.append(id_tokens), restore_crops(pipe, crops, conditions, masks, id_tokens, config, progress))[1])
    diir.restore(pipe, encoder, fullbody, references, FAST, faces=faces, assignment=[1, 0])
    expected = encoder.id_tokens(references)
    assert torch.equal(seen[0], expected[[1, 0]])


class FixedEmbedder:
    """Face embeddings by face position, to pin which reference each face resembles."""

    name = "fixed"

    def __init__(self, by_x: dict):
        self.by_x = by_x

    def embed(self, image, face):
        return self.by_x[int(face.box[0])]


def test_faces_are_matched_to_their_most_similar_references():
    from magicid.perception import Face

    one, two = np.eye(2, dtype=np.float32)
    faces = [Face(box=np.array([x, 0, x + 20, 20], float), score=1.0, kps5=np.zeros((5, 2))) for x in (10, 50)]
    encoder = type("Encoder", (), {"embedder": FixedEmbedder({10: two, 50: one})})()
    references = [type("Ref", (), {"embedding": one})(), type("Ref", (), {"embedding": two})()]
    from magicid.perception.analysis import ImageAnalysis

    analysis = ImageAnalysis(Image.new("RGB", (80, 30)), faces)
    matches = diir._match_references(analysis, faces, references, encoder, None, [])
    assert [reference for reference, _ in matches] == [1, 0]


def test_the_restored_face_takes_the_original_colours(models, references, fullbody, monkeypatch):
    """A restoration that comes back tinted red is colour-matched to the original inside M_p before pasting."""
    pipe, encoder = models

    def tinted(pipe, crops, conditions, masks, id_tokens, config, progress=None):
        return [Image.fromarray(np.clip(np.asarray(crop, np.int16) + (80, -40, -40), 0, 255).astype(np.uint8)) for crop in crops]

    monkeypatch.setattr(diir, "restore_crops", tinted)
    result = diir.restore(pipe, encoder, fullbody, references[:1], ANY_MATCH)
    for face in result.faces:
        inside = np.asarray(face.parsing_mask.resize(face.before.size)) > 200
        before = np.asarray(face.before, np.float32)[inside].mean(axis=0)
        after = np.asarray(face.after, np.float32)[inside].mean(axis=0)
        assert np.abs(after - before).max() < 12


def test_a_stranger_is_never_restored_as_a_reference(models, references, fullbody):
    pipe, encoder = models
    result = diir.restore(pipe, encoder, fullbody, references, FAST)
    assert result.faces == [] and np.array_equal(np.asarray(result.image), np.asarray(fullbody))
    assert sum("left as it is" in message for message in result.messages) == 3
    assert result.messages[-1] == "No face resembles a reference closely enough: the image is unchanged"


def test_two_people_and_one_reference_restore_only_that_person_s_face(models, references, testdata):
    pipe, encoder = models
    pair = Image.open(testdata / "group" / "obama_biden_standing.jpg").convert("RGB")
    config = DIIRConfig(steps=2, resolution=64, threshold_px=512)  # both faces are about 200 px
    result = diir.restore(pipe, encoder, pair, references[:1], config)
    (face,) = result.faces
    assert face.identity == "Obama" and face.face.box[0] < pair.width / 2  # Obama stands on the left
    assert any("left as it is" in message and "Obama" in message for message in result.messages)
    reused = diir.restore(pipe, encoder, pair, references[:1], dataclasses.replace(config, min_similarity=-1.0))
    assert len(reused.faces) == 1  # still one face per reference unless reuse_references


def test_similarity_after_is_measured_on_a_face_detected_in_the_result(models, references, fullbody, monkeypatch):
    """A restoration that leaves no face behind is reported as such, not scored on the old box."""
    pipe, encoder = models
    blank = lambda pipe, crops, conditions, masks, id_tokens, config, progress=None: [  # noqa: E731
        Image.new("RGB", crop.size, (128, 128, 128)) for crop in crops]  # fmt: skip
    monkeypatch.setattr(diir, "restore_crops", blank)
    result = diir.restore(pipe, encoder, fullbody, references[:1], dataclasses.replace(ANY_MATCH, paste_dilate_px=12))
    assert result.faces and all(face.similarity_after is None for face in result.faces)
    assert all("no face is found there after restoration" in message for message in result.messages if "Restored" in message)
