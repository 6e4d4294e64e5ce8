"""MagicID-mini's architecture: a small latent UNet over TAEF2's 32-channel latents, built from its config.

The base UNet is trained from scratch on 128 px face crops (`train/mini_base.py`); MMF (the ControlNet with ID
attention) is trained on top of it. Text: the tiny profile's frozen CLIP text encoder and byte-level tokenizer with
one fixed caption, since a few thousand face photos cannot teach a language model; the caption is dropped 10% of
the time so classifier-free guidance has an unconditional branch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

from magicid.errors import MissingWeightsError
from magicid.taef2 import LATENT_CHANNELS
from magicid.tiny import CROSS_ATTENTION_DIM, SEED, tiny_text_encoder, tiny_tokenizer


RESOLUTION = 128  # training crops; 16 x 16 latents
CAPTION = "a photo of a person"
MINI = "mini"  # as base_model in magicid.json / MMFConfig.base: the shipped base UNet with TAEF2
ASSETS = Path(__file__).resolve().parent.parent / "assets"
BASE_UNET_DIR = ASSETS / "mini-base" / "unet"
WEIGHTS_DIR = ASSETS / "mini"  # the mini profile's MMF weights (magicid layout)


def mini_unet() -> UNet2DConditionModel:
    torch.manual_seed(SEED)
    return UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(64, 96, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def mini_text_parts():
    """(tokenizer, frozen text encoder): the tiny profile's, deterministic on every machine."""
    tokenizer = tiny_tokenizer()
    return tokenizer, tiny_text_encoder(len(tokenizer)).requires_grad_(False).eval()


@torch.no_grad()
def caption_embeddings(tokenizer, text_encoder, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    return text_encoder(ids, return_dict=False)[0]


def mini_schedule() -> dict:
    """v-prediction under a cosine schedule: with epsilon under SD1.5's schedule, a 1,000-step run still left the
    low-noise steps unlearned (noise MSE 0.87 at t=50) and its samples were textured noise."""
    return dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1)  # fmt: skip


def mini_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**mini_schedule())


def mini_base_components(unet_dir: str | Path = BASE_UNET_DIR) -> dict:
    """The frozen parts MMF runs on: TAEF2, the trained base UNet, the tiny text parts and a DDIM scheduler."""
    from magicid.taef2 import SHIPPED, load_taef2

    if not (Path(unet_dir) / "config.json").is_file():
        raise MissingWeightsError(f"the MagicID-mini base UNet is missing ({Path(unet_dir).name}/config.json): "
                                  "reinstall the package or train it with python -m train.mini_base")  # fmt: skip
    tokenizer, text_encoder = mini_text_parts()
    unet = UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=torch.float32)
    return dict(vae=load_taef2(SHIPPED), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet.eval(),
                scheduler=mini_scheduler())  # fmt: skip
