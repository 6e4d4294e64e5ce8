"""Clone Face Tuning geometry: the training image and its pose image pasted twice side by side, same identity.

The paper copies the image and pastes it to its left. To keep the training resolution (and so batch shapes and
the attention grids) unchanged, each copy is the half-width strip of the image centred on the face: the cloned
image is `[strip | strip]`, exactly as wide as the original. `M1` is the face box in the left copy and `M2` the
same box in the right copy, so both have the same size and shape by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class CloneRegions:
    """Face boxes of the two copies, normalised (x0, y0, x1, y1) in [0, 1] of the cloned image, (B, 4) each."""

    m1: torch.Tensor
    m2: torch.Tensor


def strip_start(face_box_norm: torch.Tensor, width: int) -> int:
    """Left edge (px) of the half-width strip centred on the face, kept inside the image."""
    half = width // 2
    center = float(face_box_norm[0] + face_box_norm[2]) / 2 * width
    return int(min(max(round(center - half / 2), 0), width - half))


def clone_batch(tensors: list[torch.Tensor], face_boxes_norm: torch.Tensor) -> tuple[list[torch.Tensor], CloneRegions]:
    """Clone every (B, C, H, W) tensor of `tensors` (image, pose, ...) with the same strips; return the regions.

    All tensors must share B, H and an even W; `face_boxes_norm` is (B, 4) in [0, 1] of the original images.
    """
    batch, _, _, width = tensors[0].shape
    if width % 2:
        raise ValueError(f"Clone Face Tuning needs an even image width, got {width}")
    half = width // 2
    starts = [strip_start(box, width) for box in face_boxes_norm]
    cloned = []
    for tensor in tensors:
        strips = torch.stack([tensor[i, :, :, start : start + half] for i, start in enumerate(starts)])
        cloned.append(torch.cat([strips, strips], dim=-1))
    return cloned, clone_regions(face_boxes_norm, starts, width)


def clone_regions(face_boxes_norm: torch.Tensor, starts: list[int], width: int) -> CloneRegions:
    """`M1` (left copy) and `M2` (right copy) of each face box, for strips starting at `starts` px."""
    boxes = face_boxes_norm.detach().to(torch.float64).clone()
    offsets = torch.tensor(starts, dtype=torch.float64) / width
    boxes[:, 0] = (boxes[:, 0] - offsets).clamp(0.0, 0.5)
    boxes[:, 2] = (boxes[:, 2] - offsets).clamp(0.0, 0.5)
    shifted = boxes.clone()
    shifted[:, [0, 2]] += 0.5
    return CloneRegions(m1=boxes, m2=shifted)


def paired_windows(m1: torch.Tensor, m2: torch.Tensor, height: int, width: int) -> tuple[slice, slice, slice]:
    """Rows and the two column ranges of `M1` / `M2` on a `height` x `width` grid, with identical sizes.

    The size comes from `M1` (grown outward to whole cells, at least one cell); `M2` is the same window moved
    by the rounded offset between the boxes, so crops of an attention map under both always match in shape.
    """
    y0, y1 = _cell_range(float(m1[1]), float(m1[3]), height)
    x0, x1 = _cell_range(float(m1[0]), float(m1[2]), width)
    shift = round(float(m2[0] - m1[0]) * width)
    shift = min(shift, width - x1)
    return slice(y0, y1), slice(x0, x1), slice(x0 + shift, x1 + shift)


def _cell_range(start: float, stop: float, cells: int) -> tuple[int, int]:
    first = min(max(math.floor(start * cells), 0), cells - 1)
    last = max(min(math.ceil(stop * cells), cells), first + 1)
    return first, last
