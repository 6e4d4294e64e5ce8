"""MGFF (Eq. 5, 6): masked statistics transfer inside the mask, cached features untouched outside."""

from __future__ import annotations

import torch

from magicid import mgff


def _binary_mask(batch: int, height: int, width: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, height, width)
    mask[:, :, 2:7, 3:9] = 1
    mask[1:, :, 5:, :2] = 1  # a different mask per sample
    return mask


def test_fused_latents_take_reference_statistics_inside_the_mask():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 4, 10, 12, generator=generator) * 3 + 1
    reference = torch.randn(2, 4, 10, 12, generator=generator) * 0.5 - 2
    mask = _binary_mask(2, 10, 12)
    fused = mgff.fuse(target, reference, mask)

    fused_mean, fused_std = mgff.masked_mean_std(fused, mask)
    reference_mean, reference_std = mgff.masked_mean_std(reference, mask)
    torch.testing.assert_close(fused_mean, reference_mean, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fused_std, reference_std, atol=1e-5, rtol=1e-4)
    outside = (mask == 0).expand_as(fused)
    assert torch.equal(fused[outside], reference[outside])


def test_inside_the_mask_the_target_pattern_survives():
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    reference = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 1, 8, 8)
    fused = mgff.fuse(target, reference, mask)
    # an affine map per channel of the target, not the reference: correlation with the target is 1
    for channel in range(4):
        stacked = torch.stack([fused[0, channel].flatten(), target[0, channel].flatten()])
        assert torch.corrcoef(stacked)[0, 1] > 0.9999


def test_token_features_use_token_statistics():
    generator = torch.Generator().manual_seed(3)
    target = torch.randn(3, 64, 16, generator=generator) * 2
    reference = torch.randn(3, 64, 16, generator=generator) + 5
    mask = torch.zeros(3, 64, 1)
    mask[:, 10:40] = 1
    fused = mgff.fuse(target, reference, mask, dims=mgff.TOKEN_DIMS)
    inside = fused[:, 10:40]
    torch.testing.assert_close(inside.mean(dim=1), reference[:, 10:40].mean(dim=1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        inside.std(dim=1, unbiased=False), reference[:, 10:40].std(dim=1, unbiased=False), atol=1e-4, rtol=1e-4
    )
    assert torch.equal(fused[:, :10], reference[:, :10])
    assert torch.equal(fused[:, 40:], reference[:, 40:])


def test_empty_mask_returns_the_reference_and_soft_mask_mixes():
    target = torch.randn(1, 4, 6, 6)
    reference = torch.randn(1, 4, 6, 6)
    assert torch.equal(mgff.fuse(target, reference, torch.zeros(1, 1, 6, 6)), reference)
    half = torch.full((1, 1, 6, 6), 0.5)
    adapted = mgff.masked_adain(target, reference, half)
    torch.testing.assert_close(mgff.fuse(target, reference, half), 0.5 * adapted + 0.5 * reference)
