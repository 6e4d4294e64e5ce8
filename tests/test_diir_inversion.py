"""DIIR machinery on the tiny SD1.5-architecture UNet: DDIM inversion, caching, re-denoising, MGFF hooks."""

from __future__ import annotations

import copy

import pytest
import torch

from magicid import diir, mgff
from magicid.tiny import build_tiny_components


LATENT = (2, 4, 16, 16)  # two faces of 128 x 128 pixels


@pytest.fixture(scope="module")
def tiny():
    components = build_tiny_components()
    tokens = components.tokenizer(
        ["a photo of a face"], padding="max_length", max_length=components.tokenizer.model_max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        prompt_embeds = components.text_encoder(tokens.input_ids)[0]
    return components, prompt_embeds


def _noise_fn(components, prompt_embeds):
    def predict(latents, timestep):
        embeds = prompt_embeds.expand(latents.shape[0], -1, -1)
        return components.unet(latents, timestep, encoder_hidden_states=embeds).sample

    return predict


def _latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(*LATENT, generator=torch.Generator().manual_seed(seed))


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def test_inversion_timesteps_pair_with_the_sampler():
    """With a noise model that ignores the latent, naive DDIM inversion + denoising is exact (to fp32 rounding):
    this pins the pairing of inverse and forward timesteps (an off-by-one step would leave an O(1) error)."""
    per_step = {}

    def noise_of_timestep(latents, timestep):
        key = int(timestep)
        if key not in per_step:
            per_step[key] = torch.randn(latents.shape, generator=torch.Generator().manual_seed(key))
        return per_step[key]

    config = build_tiny_components().scheduler.config
    z0 = _latents()
    trajectory = diir.ddim_invert(noise_of_timestep, z0, config, steps=30)
    assert len(trajectory) == 31
    assert _relative_error(trajectory[-1], z0) > 0.5  # Z_T is far from Z_0
    restored = diir.ddim_denoise(noise_of_timestep, trajectory, config)
    assert _relative_error(restored, z0) < 1e-5


@torch.no_grad()
def test_inversion_then_denoising_returns_the_input_latent(tiny):
    """Tolerance: relative L2 error < 5e-3 with fixed-point-refined inversion (30 steps, 5 refinements).

    The tiny UNet has random weights, so its noise prediction is no score of the data and plain DDIM inversion
    (evaluating the noise at the previous latent) drifts (relative error ~0.8 here); refinement removes exactly
    that approximation, so what remains measures the machinery.
    """
    components, prompt_embeds = tiny
    noise_fn = _noise_fn(components, prompt_embeds)
    z0 = _latents()
    config = components.scheduler.config
    trajectory = diir.ddim_invert(noise_fn, z0, config, steps=30, refine_iters=5)
    restored = diir.ddim_denoise(noise_fn, trajectory, config)
    assert _relative_error(restored, z0) < 5e-3
    naive = diir.ddim_denoise(noise_fn, diir.ddim_invert(noise_fn, z0, config, steps=30), config)
    assert _relative_error(naive, z0) > 10 * _relative_error(restored, z0)


@torch.no_grad()
def test_self_attention_cache_and_processor_restoration(tiny):
    components, prompt_embeds = tiny
    unet = components.unet
    before = {name: type(processor) for name, processor in unet.attn_processors.items()}
    noise_fn = _noise_fn(components, prompt_embeds)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    fusion = diir.SelfAttentionFusion(mask)
    with diir.self_attention_fusion(unet, fusion):
        kinds = {name: type(processor) for name, processor in unet.attn_processors.items()}
        trajectory = diir.ddim_invert(noise_fn, _latents(), components.scheduler.config, steps=3, fusion=fusion)
    assert {name for name, kind in kinds.items() if kind is diir.MGFFSelfAttnProcessor} == {
        name for name in kinds if name.endswith("attn1.processor")
    }
    assert {name: type(processor) for name, processor in unet.attn_processors.items()} == before
    self_attention_layers = sum(name.endswith("attn1.processor") for name in before)
    assert len(fusion.features) == 3 * self_attention_layers
    assert all(feature.shape[0] == 2 and feature.ndim == 3 for feature in fusion.features.values())
    assert len(trajectory) == 4


@torch.no_grad()
def test_processors_are_restored_after_an_error(tiny):
    components, _ = tiny
    unet = components.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with diir.self_attention_fusion(unet, diir.SelfAttentionFusion()):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[name] is processor for name, processor in before.items())


@torch.no_grad()
def test_fusion_replays_cached_features_outside_the_mask(tiny):
    """In fuse mode with a different input, every attn1 output equals the cached one outside the mask."""
    components, prompt_embeds = tiny
    unet = copy.deepcopy(components.unet)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8] = 1  # top half of the latent grid
    fusion = diir.SelfAttentionFusion(mask)
    seen = {}

    class Spy:
        def __call__(self, layer, output):
            fused = fusion(layer, output)
            seen[layer] = (output, fused)
            return fused

    embeds = prompt_embeds.expand(2, -1, -1)
    timestep = torch.tensor(500)
    with diir.self_attention_fusion(unet, fusion):
        for processor in unet.attn_processors.values():
            if isinstance(processor, diir.MGFFSelfAttnProcessor):
                processor.fusion = Spy()
        fusion.mode, fusion.timestep = "record", 500
        unet(_latents(0), timestep, encoder_hidden_states=embeds)
        fusion.mode = "fuse"
        unet(_latents(1), timestep, encoder_hidden_states=embeds)
    assert seen
    for layer, (output, fused) in seen.items():
        cached = fusion.features[(500, layer)]
        token_mask = fusion._token_mask(output)
        outside = (token_mask == 0).expand_as(output)
        assert outside.any() and (~outside).any()
        assert torch.equal(fused[outside], cached[outside])
        inside_mean, _ = mgff.masked_mean_std(fused, token_mask, mgff.TOKEN_DIMS)
        cached_mean, _ = mgff.masked_mean_std(cached, token_mask, mgff.TOKEN_DIMS)
        torch.testing.assert_close(inside_mean, cached_mean, atol=1e-4, rtol=1e-3)


@torch.no_grad()
def test_latent_fusion_pins_the_unmasked_latents_to_the_inversion(tiny):
    components, prompt_embeds = tiny
    base = _noise_fn(components, prompt_embeds)

    def edited(latents, timestep):  # an "edit": the sampler sees a different model than the inversion did
        return base(latents, timestep) * 0.5 + 0.3

    z0 = _latents()
    config = components.scheduler.config
    trajectory = diir.ddim_invert(base, z0, config, steps=4)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 5:11, 5:11] = 1
    restored = diir.ddim_denoise(edited, trajectory, config, mask=mask)
    outside = (mask == 0).expand_as(z0)
    assert torch.equal(restored[outside], z0[outside])
    assert not torch.allclose(restored[~outside], z0[~outside], atol=1e-3)
