"""TAEF2 in diffusers' AutoencoderTiny: the converted weights reconstruct real photos, and its pooled blocks matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from magicid.taef2 import SHIPPED, PooledTinyBlock, load_taef2, taef2


@pytest.fixture(scope="module")
def vae():
    return load_taef2(SHIPPED)


def round_trip_psnr(model, image: Image.Image, side: int) -> float:
    resized = image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(resized, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    with torch.no_grad():
        latents = model.encode(pixels).latents
        assert latents.shape == (1, 32, side // 8, side // 8)
        decoded = model.decode(latents).sample.clamp(-1, 1)
    mse = float(((decoded - pixels) ** 2).mean()) / 4  # on the [0, 1] scale
    return 10 * np.log10(1 / mse)


@pytest.mark.parametrize(("photo", "least_db"), [("portraits/barack_obama/1.jpg", 29), ("group/voc_couple.jpg", 32)])
def test_real_photos_survive_the_round_trip(vae, testdata, photo, least_db):
    assert round_trip_psnr(vae, Image.open(testdata / photo), 256) > least_db


def test_the_pooled_branches_are_part_of_the_model(vae, testdata):
    photo = Image.open(testdata / "portraits" / "barack_obama" / "1.jpg")
    pooled = [module for module in vae.modules() if isinstance(module, PooledTinyBlock)]
    assert len(pooled) == 6
    full = round_trip_psnr(vae, photo, 256)
    saved = [block.pool[-1].weight.detach().clone() for block in pooled]
    try:
        for block in pooled:
            block.pool[-1].weight.data.zero_()  # the branch then adds nothing: plain AutoencoderTiny blocks
        assert round_trip_psnr(vae, photo, 256) < full - 3
    finally:
        for block, weight in zip(pooled, saved):
            block.pool[-1].weight.data.copy_(weight)
    assert round_trip_psnr(taef2().eval(), photo, 128) < 12  # untrained
