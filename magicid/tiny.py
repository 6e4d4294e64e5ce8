"""The `tiny` profile's models: SD1.5-architecture classes at miniature sizes, built from configs.

Weights are random but deterministic (seeded), so every machine builds the same miniature model offline.
Its outputs are noise-like pictures, not photographs: it exists to run and test the whole system without
downloading anything. The shapes keep SD1.5's structure where the algorithms depend on it: a VAE that
downsamples 8x, 4 latent channels, cross-attention at a 32x32 token grid for a 512x512 image (Clone Face
Tuning and MGMICA need maps of 32x32 or more), 4 ID tokens, and a scaled-linear DDIM schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)


TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-tokenizer"
CROSS_ATTENTION_DIM = 32
CLIP_VISION_HIDDEN = 32
ID_TOKENS = 4
SEED = 0


@dataclass
class TinyComponents:
    """The diffusion components of the tiny profile (the ID resampler is built by `magicid.resampler`)."""

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: UNet2DConditionModel
    controlnet: ControlNetModel
    scheduler: DDIMScheduler
    image_encoder: CLIPVisionModelWithProjection
    feature_extractor: CLIPImageProcessor


def sd15_scheduler_config() -> dict:
    """SD1.5's noise schedule, as in its `scheduler_config.json`."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer (514 tokens, no merges) shipped in assets/, so it loads offline."""
    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_controlnet(unet: UNet2DConditionModel, conditioning_channels: int = 3) -> ControlNetModel:
    """A ControlNet initialised from the UNet, as the paper does (its hint encoder downsamples 8x like SD1.5's)."""
    torch.manual_seed(SEED)
    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=(8, 8, 16, 16), conditioning_channels=conditioning_channels
    )


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )


def tiny_text_encoder(vocab_size: int) -> CLIPTextModel:
    torch.manual_seed(SEED)
    config = CLIPTextConfig(
        hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    return CLIPTextModel(config).eval()


def tiny_image_encoder() -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    torch.manual_seed(SEED)
    config = CLIPVisionConfig(
        hidden_size=CLIP_VISION_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=224,
        patch_size=32,
        projection_dim=CROSS_ATTENTION_DIM,
    )
    processor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    return CLIPVisionModelWithProjection(config).eval(), processor


def build_tiny_components() -> TinyComponents:
    """Every diffusion component of the tiny profile, deterministic across runs and machines."""
    tokenizer = tiny_tokenizer()
    unet = tiny_unet()
    image_encoder, feature_extractor = tiny_image_encoder()
    return TinyComponents(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        controlnet=tiny_controlnet(unet),
        scheduler=DDIMScheduler(**sd15_scheduler_config()),
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
    )
