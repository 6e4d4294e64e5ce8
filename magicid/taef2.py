"""TAEF2, the tiny autoencoder of FLUX.2 (madebyollin/taesd, MIT), as a diffusers `AutoencoderTiny`.

32 latent channels at 1/8 of the image side, about 1.3 M parameters per half. diffusers' `AutoencoderTiny` is the
same network except one thing: in the three blocks at the latent resolution (the last three of the encoder, the
first three of the decoder) TAEF2 adds a pooled branch, `x + conv1x1(relu(groupnorm(conv1x1(x))))` with 4x the
channels, before the block. `taef2()` builds an `AutoencoderTiny` and gives those blocks that branch
(`PooledTinyBlock`); weights are ours in safetensors (`scripts/convert_taef2.py` converts the original files).

The weights load only through `load_taef2` (the file is named `taef2.safetensors`, not diffusers' default name), so
a plain `AutoencoderTiny.from_pretrained` cannot silently drop the pooled branches.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderTiny
from diffusers.models.autoencoders.vae import AutoencoderTinyBlock
from safetensors.torch import load_file, save_file
from torch import nn


LATENT_CHANNELS = 32
WEIGHTS_NAME = "taef2.safetensors"
SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "taef2"  # converted weights, with their MIT notice
ENCODER_POOLED = (11, 12, 13)  # indices in `encoder.layers` of the blocks at the latent resolution
DECODER_POOLED = (2, 3, 4)  # the same in `decoder.layers`


class PooledTinyBlock(nn.Module):
    """An `AutoencoderTinyBlock` with TAEF2's pooled branch added to its input."""

    def __init__(self, block: AutoencoderTinyBlock, channels: int = 64):
        super().__init__()
        wide = channels * 4
        self.pool = nn.Sequential(
            nn.Conv2d(channels, wide, 1, bias=False), nn.GroupNorm(4, wide), nn.ReLU(), nn.Conv2d(wide, channels, 1, bias=False)
        )
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x + self.pool(x))


def taef2() -> AutoencoderTiny:
    """TAEF2's architecture with untrained weights."""
    vae = AutoencoderTiny(latent_channels=LATENT_CHANNELS)
    for layers, indices in ((vae.encoder.layers, ENCODER_POOLED), (vae.decoder.layers, DECODER_POOLED)):
        for index in indices:
            layers[index] = PooledTinyBlock(layers[index])
    return vae


def load_taef2(folder: str | Path, dtype: torch.dtype = torch.float32) -> AutoencoderTiny:
    """TAEF2 from `folder/taef2.safetensors` (written by `save_taef2`), in eval mode."""
    vae = taef2()
    vae.load_state_dict(load_file(Path(folder) / WEIGHTS_NAME))
    return (vae if dtype == torch.float32 else vae.to(dtype)).eval()


def save_taef2(vae: AutoencoderTiny, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in vae.state_dict().items()}
    save_file(state, folder / WEIGHTS_NAME, metadata={"format": "pt", "architecture": "taef2"})
    return folder / WEIGHTS_NAME


def from_original_state_dicts(encoder: dict[str, torch.Tensor], decoder: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original `taef2_encoder.pth` / `taef2_decoder.pth` keys (`nn.Sequential` indices) -> `taef2()`'s keys.

    The original decoder starts with a parameter-free clamp that `DecoderTiny.forward` applies itself, so its indices
    are one higher; the pooled blocks keep the original's `pool.*` and put the rest under `block.*`.
    """
    renamed = {}
    for prefix, state, shift, pooled in (("encoder", encoder, 0, ENCODER_POOLED), ("decoder", decoder, 1, DECODER_POOLED)):
        for key, tensor in state.items():
            index, rest = key.split(".", 1)
            index = int(index) - shift
            if index in pooled and not rest.startswith("pool."):
                rest = f"block.{rest}"
            renamed[f"{prefix}.layers.{index}.{rest}"] = tensor
    return renamed
