"""Training losses: `L_cldm` (Eq. 3), the clone face attention loss `L_cfa` (Eq. 2) and Eq. 4's clone schedule.

`L_cfa = || Crop(CA, M1) * G - Crop(CA, M2) * G ||_2^2`, with `M1` / `M2` the two cloned face regions (same
size), `G` a Gaussian window of that size, on every ControlNet cross-attention layer of resolution >= 32x32.

Which tensor CA is: the ID branch's contribution to each cross-attention output, `to_out(s * CrossAttn(Q, F_id))`
(`IDAttnProcessor.contribution_sink`). The two copies carry the same face, pose and identity, so the loss asks
the ID attention to put the same identity features on both; the text branch's part is left out because it does
not see `F_id` (pulling it together would train the ControlNet's text attention, not identity) and, being most
of the output, it would drown the ID signal. The squared L2 norm runs over the channels of each position of the
window; it is averaged over the window's positions (so faces of any size weigh alike), the layers and the batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from magicid.mgmica import IDAttnProcessor
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
    reduction: str = "positions",
) -> torch.Tensor:
    """`L_cfa` (Eq. 2), averaged over the maps of at least `min_resolution` per side and over the batch.

    `attention_maps`: (B, C, h, w) tensors; `m1`, `m2`: (B, 4) normalised face boxes of the two copies.
    `reduction="positions"`: the squared L2 norm over channels, averaged over the window's positions (the
    default, see the module docstring); `"sum"`: the squared L2 norm of the whole window; `"mean"`: averaged over
    every element.
    """
    losses = []
    for maps in attention_maps:
        if min(maps.shape[-2:]) < min_resolution:
            continue
        for index in range(maps.shape[0]):
            rows, cols1, cols2 = paired_windows(m1[index], m2[index], *maps.shape[-2:])
            window = gaussian_window(rows.stop - rows.start, cols1.stop - cols1.start).to(maps.device)
            difference = (maps[index, :, rows, cols1].float() - maps[index, :, rows, cols2].float()) * window
            losses.append(_reduce(difference.pow(2), reduction))
    if not losses:
        raise ValueError(f"no cross-attention map of {min_resolution}x{min_resolution} or more to apply L_cfa to")
    return torch.stack(losses).mean()


def _reduce(squared: torch.Tensor, reduction: str) -> torch.Tensor:
    """(C, h, w) squared differences -> one number (see `clone_face_attention_loss`)."""
    if reduction == "positions":
        return squared.sum(dim=0).mean()
    if reduction == "sum":
        return squared.sum()
    if reduction == "mean":
        return squared.mean()
    raise ValueError(f"reduction must be positions, sum or mean, got {reduction!r}")


class IDContributionRecorder:
    """Records the ID branch's contribution to every cross-attention output of `model` (its `IDAttnProcessor`s).

    Use as a context manager around one forward pass; `maps(aspect)` then returns them as (B, C, h, w), in the
    order the layers ran, with their gradients.
    """

    def __init__(self, model: torch.nn.Module):
        self.processors = [p for p in model.attn_processors.values() if isinstance(p, IDAttnProcessor)]
        if not self.processors:
            raise ValueError(f"{type(model).__name__} has no ID cross-attention to record: install_id_attention first")
        self.outputs: list[torch.Tensor] = []

    def __enter__(self) -> IDContributionRecorder:
        self.outputs = []
        for processor in self.processors:
            processor.contribution_sink = self.outputs
        return self

    def __exit__(self, *exc_info) -> None:
        for processor in self.processors:
            processor.contribution_sink = None

    def maps(self, aspect: float = 1.0) -> list[torch.Tensor]:
        return [as_spatial(output, aspect) for output in self.outputs]
