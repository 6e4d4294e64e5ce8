"""Mask-Guided Face Fusion (MGFF, paper Eq. 5 and 6).

During DIIR's re-denoising, `V_r` are the features being restored (the latent `Z_t` or a self-attention
layer's output) and `V_c` the features cached at the same timestep by DDIM inversion of the unreal face.
Inside the face-parsing mask `M_p` the restored features are re-normalised to the cached ones' masked
per-channel mean and standard deviation (MaskedAdaIN, Eq. 5), which carries over colour and style; outside
the mask the cached features are kept as they are (Eq. 6), which keeps the background.
"""

from __future__ import annotations

import torch
from torch import Tensor


EPS = 1e-5
LATENT_DIMS = (-2, -1)  # (B, C, H, W) latents: statistics over H, W
TOKEN_DIMS = (1,)  # (B, N, C) attention features: statistics over the N tokens


def masked_mean_std(features: Tensor, mask: Tensor, dims: tuple[int, ...] = LATENT_DIMS) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation of `features` weighted by `mask` (broadcastable), over `dims`."""
    weight = mask.to(features.dtype).expand_as(features)
    total = weight.sum(dim=dims, keepdim=True).clamp_min(EPS)
    mean = (features * weight).sum(dim=dims, keepdim=True) / total
    variance = ((features - mean).square() * weight).sum(dim=dims, keepdim=True) / total
    return mean, variance.sqrt()


def masked_adain(target: Tensor, reference: Tensor, mask: Tensor, dims: tuple[int, ...] = LATENT_DIMS) -> Tensor:
    """Eq. 5: `target` (V_r) re-normalised so its statistics inside `mask` equal those of `reference` (V_c).

    Statistics are per sample and per channel, over `dims`. A sample whose mask is empty comes back unchanged
    (its statistics are then those of an empty set and meaningless).
    """
    target_mean, target_std = masked_mean_std(target, mask, dims)
    reference_mean, reference_std = masked_mean_std(reference, mask, dims)
    normalised = (target - target_mean) / (target_std.square() + EPS).sqrt()
    adapted = normalised * reference_std + reference_mean
    has_mask = mask.to(target.dtype).expand_as(target).sum(dim=dims, keepdim=True) > 0
    return torch.where(has_mask, adapted, target)


def blend(restored: Tensor, reference: Tensor, mask: Tensor) -> Tensor:
    """Eq. 6: `restored` inside the mask, `reference` outside, a soft mix on the mask's border.

    Where the mask is exactly 0 the result is exactly `reference`, bit for bit.
    """
    mask = mask.to(restored.dtype)
    mixed = restored * mask + reference * (1 - mask)
    return torch.where(mask == 0, reference, mixed)


def fuse(target: Tensor, reference: Tensor, mask: Tensor, dims: tuple[int, ...] = LATENT_DIMS) -> Tensor:
    """MGFF = MaskedAdaIN (Eq. 5) followed by the masked blend (Eq. 6).

    Args:
        target: V_r, the features being restored, e.g. (B, C, H, W) latents or (B, N, C) attention features.
        reference: V_c, the cached features of the same shape (or broadcastable to it).
        mask: M_p in [0, 1], broadcastable to `target`, e.g. (B, 1, H, W) or (B, N, 1).
        dims: the spatial dimensions the statistics run over (`LATENT_DIMS` or `TOKEN_DIMS`).
    """
    dtype = target.dtype  # statistics in float32: half-precision variances of small regions are too coarse
    target, reference, mask = target.float(), reference.float().expand_as(target), mask.float()
    return blend(masked_adain(target, reference, mask, dims), reference, mask).to(dtype)
