"""Clone Face Tuning geometry, L_cfa (Eq. 2) and the Eq. 4 schedule, on synthetic tensors."""

from __future__ import annotations

import copy

import pytest
import torch

from magicid.mgmica import install_id_attention, set_id_scale
from train.clone_face import clone_batch, paired_windows, strip_start
from train.losses import (
    IDContributionRecorder,
    as_spatial,
    clone_face_attention_loss,
    diffusion_loss,
    gaussian_window,
    is_clone_step,
)


def synthetic_batch(height: int = 64, width: int = 96):
    torch.manual_seed(0)
    image = torch.rand(2, 3, height, width)
    pose = torch.rand(2, 3, height, width)
    boxes = torch.tensor([[0.10, 0.20, 0.30, 0.45], [0.60, 0.10, 0.85, 0.40]], dtype=torch.float64)
    return image, pose, boxes


def test_clone_halves_carry_the_same_image_and_pose():
    image, pose, boxes = synthetic_batch()
    (cloned_image, cloned_pose), _ = clone_batch([image, pose], boxes)
    assert cloned_image.shape == image.shape and cloned_pose.shape == pose.shape
    half = image.shape[-1] // 2
    for cloned in (cloned_image, cloned_pose):
        assert torch.equal(cloned[..., :half], cloned[..., half:])
    for index, box in enumerate(boxes):  # each half is the original strip around the face, pose aligned with image
        start = strip_start(box, image.shape[-1])
        assert torch.equal(cloned_image[index, :, :, :half], image[index, :, :, start : start + half])
        assert torch.equal(cloned_pose[index, :, :, :half], pose[index, :, :, start : start + half])


def test_clone_masks_have_equal_shape_and_cover_the_same_face():
    image, _, boxes = synthetic_batch()
    (cloned,), regions = clone_batch([image], boxes)
    assert torch.allclose(regions.m1[:, 2] - regions.m1[:, 0], regions.m2[:, 2] - regions.m2[:, 0])
    assert torch.allclose(regions.m1[:, [1, 3]], regions.m2[:, [1, 3]])
    assert torch.all(regions.m1[:, 2] <= 0.5) and torch.all(regions.m2[:, 0] >= 0.5)
    for height, width in ((8, 12), (32, 48), (64, 96)):
        for index in range(2):
            rows, cols1, cols2 = paired_windows(regions.m1[index], regions.m2[index], height, width)
            assert cols1.stop - cols1.start == cols2.stop - cols2.start > 0
    rows, cols1, cols2 = paired_windows(regions.m1[0], regions.m2[0], *image.shape[-2:])
    assert torch.equal(cloned[0, :, rows, cols1], cloned[0, :, rows, cols2])  # same face pixels under M1 and M2


def test_clone_face_box_matches_original_face_pixels():
    image, _, boxes = synthetic_batch()
    (cloned,), regions = clone_batch([image], boxes)
    height, width = image.shape[-2:]
    start = strip_start(boxes[0], width)
    x0 = round(float(boxes[0, 0]) * width)
    assert round(float(regions.m1[0, 0]) * width) == x0 - start
    assert torch.equal(cloned[0, :, :, x0 - start], image[0, :, :, x0])


def test_clone_rejects_odd_width():
    with pytest.raises(ValueError, match="even"):
        clone_batch([torch.zeros(1, 3, 8, 9)], torch.tensor([[0.1, 0.1, 0.3, 0.3]]))


def test_gaussian_window_is_centred_with_peak_one():
    window = gaussian_window(5, 7)
    assert window.shape == (5, 7)
    assert window[2, 3] == pytest.approx(1.0)
    assert torch.all(window <= 1.0) and window[0, 0] < window[2, 3]
    assert torch.allclose(window, window.flip(0)) and torch.allclose(window, window.flip(1))


def test_l_cfa_equals_the_formula_on_synthetic_maps():
    torch.manual_seed(1)
    maps = torch.randn(1, 4, 32, 32)
    m1 = torch.tensor([[0.125, 0.25, 0.25, 0.5]], dtype=torch.float64)  # cells x 4..8, y 8..16
    m2 = torch.tensor([[0.625, 0.25, 0.75, 0.5]], dtype=torch.float64)  # cells x 20..24
    window = gaussian_window(8, 4)
    expected = ((maps[0, :, 8:16, 4:8] * window - maps[0, :, 8:16, 20:24] * window) ** 2).sum()
    assert clone_face_attention_loss([maps], m1, m2, reduction="sum").item() == pytest.approx(expected.item())
    assert clone_face_attention_loss([maps], m1, m2).item() == pytest.approx(expected.item() / (8 * 4))
    assert clone_face_attention_loss([maps], m1, m2, reduction="mean").item() == pytest.approx(expected.item() / (4 * 8 * 4))


def test_l_cfa_is_zero_for_equal_halves_and_skips_small_maps():
    torch.manual_seed(2)
    half = torch.randn(2, 8, 32, 16)
    equal = torch.cat([half, half], dim=-1)
    m1 = torch.tensor([[0.1, 0.2, 0.3, 0.5], [0.2, 0.1, 0.45, 0.4]], dtype=torch.float64)
    m2 = m1.clone()
    m2[:, [0, 2]] += 0.5
    small = torch.randn(2, 8, 16, 16)  # below 32x32: ignored even though its halves differ
    assert clone_face_attention_loss([equal, small], m1, m2).item() == 0.0
    different = equal.clone()
    different[..., 16:] += torch.randn_like(half)
    assert clone_face_attention_loss([different], m1, m2).item() > 0.0
    with pytest.raises(ValueError, match="32x32"):
        clone_face_attention_loss([small], m1, m2)


def test_l_cfa_gradient_pulls_the_halves_together():
    maps = torch.randn(1, 2, 32, 32, requires_grad=True)
    m1 = torch.tensor([[0.0, 0.0, 0.5, 1.0]], dtype=torch.float64)
    m2 = torch.tensor([[0.5, 0.0, 1.0, 1.0]], dtype=torch.float64)
    clone_face_attention_loss([maps], m1, m2).backward()
    assert torch.allclose(maps.grad[..., :16], -maps.grad[..., 16:])
    assert maps.grad.abs().sum() > 0


def test_eq4_schedule_clones_every_10_steps_of_the_final_stage_only():
    from train.configs import paper_config

    assert [is_clone_step(step) for step in range(12)] == [True] + [False] * 9 + [True, False]
    paper = paper_config()
    final_start = 150_000
    assert not any(paper.is_clone_step(step) for step in range(0, final_start, 10))
    assert [step for step in range(final_start - 20, final_start + 25) if paper.is_clone_step(step)] == [
        final_start, final_start + 10, final_start + 20]  # fmt: skip
    assert diffusion_loss(torch.ones(2, 4), torch.zeros(2, 4)).item() == pytest.approx(1.0)


def test_as_spatial_uses_the_latent_aspect():
    tokens = torch.arange(2 * 8 * 3, dtype=torch.float32).reshape(1, 16, 3)  # aspect 0.25: 2 rows x 8 columns
    spatial = as_spatial(tokens, aspect=0.25)
    assert spatial.shape == (1, 3, 2, 8)
    assert torch.equal(spatial[0, :, 1, 0], tokens[0, 8])


def test_recorder_captures_the_id_branch_of_every_controlnet_cross_attention(tiny_components):
    controlnet = copy.deepcopy(tiny_components.controlnet)
    install_id_attention(controlnet)
    recorder = IDContributionRecorder(controlnet)
    latents = torch.randn(1, 4, 64, 64)
    text = torch.randn(1, 5, controlnet.config.cross_attention_dim)
    ids = torch.randn(1, 1, 4, controlnet.config.cross_attention_dim)

    def record(scale: float) -> list[torch.Tensor]:
        set_id_scale(controlnet, scale)
        with torch.no_grad(), recorder:
            controlnet(latents, 10, encoder_hidden_states=(text, [ids]), controlnet_cond=torch.rand(1, 3, 512, 512))
        return recorder.maps(aspect=1.0)

    maps = record(1.0)
    assert len(maps) == len(recorder.processors) and all(item.shape[-2:] == (32, 32) for item in maps)
    assert all(item.abs().amax() > 0 for item in maps)
    assert all(torch.equal(item, torch.zeros_like(item)) for item in record(0.0))  # no ID attention: no contribution
    assert all(processor.contribution_sink is None for processor in recorder.processors)  # detached on exit
