"""MagicIDPipeline end to end on the tiny profile's components (128x128, 3 DDIM steps, CFG)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image, ImageDraw

from magicid.pipeline import MagicIDPipeline, MagicIDPipelineOutput
from magicid.profiles import build_tiny_pipeline


SIZE, STEPS = 128, 3


@pytest.fixture(scope="module")
def pipe(tiny_components) -> MagicIDPipeline:
    pipeline = build_tiny_pipeline(tiny_components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def skeleton() -> Image.Image:
    image = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(image)
    draw.line([(64, 20), (64, 70), (40, 110)], fill=(255, 0, 0), width=4)
    draw.line([(64, 70), (88, 110)], fill=(0, 255, 0), width=4)
    draw.ellipse([54, 10, 74, 30], fill=(0, 0, 255))
    return image


@pytest.fixture(scope="module")
def id_tokens() -> torch.Tensor:
    return torch.randn(2, 4, 32, generator=torch.Generator().manual_seed(3))


def generate(pipe, skeleton, seed=0, **kwargs) -> np.ndarray:
    kwargs = {"num_inference_steps": STEPS, "output_type": "np", "width": SIZE, "height": SIZE} | kwargs
    return pipe("a portrait", skeleton, generator=torch.Generator().manual_seed(seed), **kwargs).images


def test_same_seed_same_image_and_output_type(pipe, skeleton, id_tokens):
    first = generate(pipe, skeleton, id_embeds=id_tokens[:1])
    second = generate(pipe, skeleton, id_embeds=id_tokens[:1])
    assert first.shape == (1, SIZE, SIZE, 3)
    assert np.array_equal(first, second)
    assert not np.allclose(first, generate(pipe, skeleton, seed=1, id_embeds=id_tokens[:1]))


def test_id_scale_zero_is_exactly_the_image_without_id(pipe, skeleton, id_tokens):
    without = generate(pipe, skeleton)
    assert np.array_equal(generate(pipe, skeleton, id_embeds=id_tokens[:1], id_scale=0.0), without)
    assert not np.allclose(generate(pipe, skeleton, id_embeds=id_tokens[:1], id_scale=1.0), without, atol=1e-4)


def test_a_different_identity_changes_the_image(pipe, skeleton, id_tokens):
    first = generate(pipe, skeleton, id_embeds=id_tokens[:1])
    assert np.abs(first - generate(pipe, skeleton, id_embeds=id_tokens[1:])).max() > 1e-3


def test_controlnet_scale_zero_is_exactly_the_image_without_controlnet(pipe, skeleton):
    plain = StableDiffusionPipeline(
        pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.scheduler, None, None, None, False
    )
    plain.set_progress_bar_config(disable=True)
    expected = plain(
        "a portrait", num_inference_steps=STEPS, guidance_scale=5.0, width=SIZE, height=SIZE, output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert np.array_equal(generate(pipe, skeleton, controlnet_conditioning_scale=0.0), expected)
    assert not np.allclose(generate(pipe, skeleton), expected, atol=1e-4)


def test_two_masked_identities_batch_callback_and_conditions(pipe, skeleton, id_tokens):
    masks = torch.zeros(2, SIZE, SIZE)
    masks[0, :, : SIZE // 2] = 1.0
    masks[1, :, SIZE // 2 :] = 1.0
    steps_seen = []

    def on_step(pipeline, step, timestep, tensors):
        steps_seen.append(step)
        assert tensors["latents"].shape == (2, 4, SIZE // 8, SIZE // 8)
        return {}

    output = pipe(
        "two people", skeleton, id_embeds=id_tokens, id_masks=masks, id_scale=[1.0, 0.5], num_images_per_prompt=2,
        num_inference_steps=STEPS, width=SIZE, height=SIZE, callback_on_step_end=on_step,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(output, MagicIDPipelineOutput)
    assert len(output.images) == 2 and output.images[0].size == (SIZE, SIZE)
    assert steps_seen == list(range(STEPS))
    condition = np.asarray(output.conditions[0])
    assert condition.shape == (SIZE, SIZE, 3) and np.abs(condition.astype(int) - np.asarray(skeleton)).max() <= 1


def test_bad_id_inputs_are_rejected(pipe, skeleton, id_tokens):
    with pytest.raises(ValueError, match="multiples of 8"):
        generate(pipe, skeleton, width=100)
    with pytest.raises(ValueError, match="id_masks"):
        generate(pipe, skeleton, id_embeds=id_tokens, id_masks=torch.ones(1, SIZE, SIZE))
    with pytest.raises(ValueError, match="cross-attention"):
        generate(pipe, skeleton, id_embeds=torch.zeros(1, 4, 7))


def test_predict_noise_broadcasts_one_prompt_over_a_batch(pipe, skeleton, id_tokens):
    prompt_embeds = torch.cat(pipe.encode_prompt("a face", "cpu", 1, True, "blurry")[::-1])
    control = pipe.prepare_image(skeleton, SIZE, SIZE, 1, 1, "cpu", torch.float32)
    latents = torch.randn(3, 4, SIZE // 8, SIZE // 8, generator=torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(STEPS)
    t = pipe.scheduler.timesteps[0]
    with torch.no_grad():
        batched = pipe.predict_noise(latents, t, prompt_embeds, control, id_tokens[:1], guidance_scale=5.0)
        single = pipe.predict_noise(latents[1:2], t, prompt_embeds, control, id_tokens[:1], guidance_scale=5.0)
    assert batched.shape == latents.shape
    assert torch.allclose(batched[1:2], single, atol=1e-5)


def test_negative_id_tokens_feed_only_the_unconditional_branch(pipe, skeleton, id_tokens):
    one = id_tokens[:1]
    default = generate(pipe, skeleton, id_embeds=one)
    assert np.array_equal(generate(pipe, skeleton, id_embeds=one, negative_id_embeds=torch.zeros_like(one)), default)
    assert not np.allclose(generate(pipe, skeleton, id_embeds=one, negative_id_embeds=id_tokens[1:2]), default, atol=1e-4)
    no_cfg = dict(id_embeds=one, guidance_scale=1.0)
    assert np.array_equal(generate(pipe, skeleton, negative_id_embeds=id_tokens[1:2], **no_cfg), generate(pipe, skeleton, **no_cfg))


def test_null_tokens_are_the_resampler_of_a_blank_face_and_image():
    from magicid.config import ProfileConfig
    from magicid.profiles import load_profile

    class Blank:
        name, dim = "blank128", 128

    _, encoder = load_profile(ProfileConfig(name="tiny"), embedder=Blank())
    null = encoder.null_tokens(3)
    assert null.shape == (3, 4, 32) and torch.equal(null[0], null[2]) and null.abs().sum() > 0
