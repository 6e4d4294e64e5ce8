"""Training losses: `L_cldm` (Eq. 3), the clone face attention loss `L_cfa` (Eq. 2) and their schedule (Eq. 4).

`L_cfa = || Crop(CA, M1) * G - Crop(CA, M2) * G ||_2^2`, where CA is a ControlNet cross-attention output
(Eq. 1: text + ID attention) of resolution >= 32x32, `M1` / `M2` the two cloned face regions (same size) and
`G` a Gaussian window of that size. CA is captured with forward hooks on the `attn2` modules, so the attention
processors (MGMICA) stay untouched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from train.clone_face import paired_windows


PAPER_CFA_WEIGHT = 0.2
PAPER_CLONE_EVERY = 10
PAPER_CFA_MIN_RESOLUTION = 32
GAUSSIAN_SIGMA_FRACTION = 0.25  # sigma of G, as a fraction of the crop's side: centre of the face counts most


def diffusion_loss(model_pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`L_cldm` (Eq. 3): mean squared error between the predicted and the true noise (float32)."""
    return F.mse_loss(model_pred.float(), target.float(), reduction="mean")


def is_clone_step(step: int, every: int = PAPER_CLONE_EVERY) -> bool:
    """Eq. 4's condition mod(iter, 10) = 0: this iteration trains on a cloned batch and adds `L_cfa`."""
    return every > 0 and step % every == 0


def total_loss(
    l_cldm: torch.Tensor,
    l_cfa: torch.Tensor | None,
    step: int,
    weight: float = PAPER_CFA_WEIGHT,
    every: int = PAPER_CLONE_EVERY,
) -> torch.Tensor:
    """Eq. 4: `L_cldm + weight * L_cfa` on clone steps, `L_cldm` otherwise."""
    if is_clone_step(step, every):
        if l_cfa is None:
            raise ValueError(f"step {step} is a clone step: L_cfa is required")
        return l_cldm + weight * l_cfa
    return l_cldm


def gaussian_window(height: int, width: int, sigma_fraction: float = GAUSSIAN_SIGMA_FRACTION) -> torch.Tensor:
    """G: a (height, width) Gaussian centred on the window, peak 1, sigma = `sigma_fraction` x each side."""
    rows = _gaussian_1d(height, sigma_fraction)
    cols = _gaussian_1d(width, sigma_fraction)
    return rows[:, None] * cols[None, :]


def _gaussian_1d(size: int, sigma_fraction: float) -> torch.Tensor:
    positions = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    sigma = max(sigma_fraction * size, 1e-3)
    return torch.exp(-0.5 * (positions / sigma) ** 2)


def as_spatial(attention_output: torch.Tensor, aspect: float) -> torch.Tensor:
    """(B, h*w, C) attention output -> (B, C, h, w), with h / w = `aspect` (that of the latent)."""
    if attention_output.ndim == 4:
        return attention_output
    batch, tokens, channels = attention_output.shape
    height = round(math.sqrt(tokens * aspect))
    width = tokens // height
    if height * width != tokens:
        raise ValueError(f"{tokens} tokens do not form a grid of aspect {aspect}")
    return attention_output.transpose(1, 2).reshape(batch, channels, height, width)


def clone_face_attention_loss(
    attention_maps: Iterable[torch.Tensor],
    m1: torch.Tensor,
    m2: torch.Tensor,
    min_resolution: int = PAPER_CFA_MIN_RESOLUTION,
    reduction: str = "mean",
) -> torch.Tensor:
    """`L_cfa` (Eq. 2), averaged over the maps of at least `min_resolution` per side and over the batch.

    `attention_maps`: (B, C, h, w) tensors; `m1`, `m2`: (B, 4) normalised face boxes of the two copies.
    `reduction="mean"` divides each squared norm by its element count (scale-free across crop sizes and
    channel widths); `"sum"` is the plain squared L2 norm of Eq. 2.
    """
    losses = []
    for maps in attention_maps:
        if min(maps.shape[-2:]) < min_resolution:
            continue
        for index in range(maps.shape[0]):
            rows, cols1, cols2 = paired_windows(m1[index], m2[index], *maps.shape[-2:])
            window = gaussian_window(rows.stop - rows.start, cols1.stop - cols1.start).to(maps.device)
            difference = (maps[index, :, rows, cols1].float() - maps[index, :, rows, cols2].float()) * window
            squared = difference.pow(2)
            losses.append(squared.mean() if reduction == "mean" else squared.sum())
    if not losses:
        raise ValueError(f"no cross-attention map of {min_resolution}x{min_resolution} or more to apply L_cfa to")
    return torch.stack(losses).mean()


class CrossAttentionRecorder:
    """Records the outputs of every cross-attention (`attn2`) module of `model` with forward hooks.

    Use as a context manager around one forward pass; `maps(aspect)` then returns them as (B, C, h, w).
    Hooks add nothing to the graph, so gradients flow from `L_cfa` into the recorded outputs.
    """

    def __init__(self, model: torch.nn.Module):
        self.modules = [
            module
            for name, module in model.named_modules()
            if name.endswith("attn2") and isinstance(module, Attention)
        ]
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no cross-attention (attn2) modules to record")
        self.outputs: list[torch.Tensor] = []
        self._handles = []

    def __enter__(self) -> CrossAttentionRecorder:
        self.outputs = []
        self._handles = [module.register_forward_hook(self._record) for module in self.modules]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record(self, module, inputs, output) -> None:
        self.outputs.append(output[0] if isinstance(output, tuple) else output)

    def maps(self, aspect: float = 1.0) -> list[torch.Tensor]:
        return [as_spatial(output, aspect) for output in self.outputs]
