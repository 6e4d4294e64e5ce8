"""OpenPose-18 skeleton rendering exactly as the OpenPose ControlNets were trained on: controlnet_aux's own
`draw_bodypose` (COCO-18 order, 17 limbs, the 18-colour palette, stickwidth 4, limbs at 60 % colour)."""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from PIL import Image


# OpenPose's joint palette in COCO-18 order, as controlnet_aux draws it (what a rendering can be checked against)
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
NUM_LIMBS = 17


def draw_openpose(poses: list[np.ndarray], width: int, height: int) -> Image.Image:
    """Render persons given as (18, 3) `(x_norm, y_norm, conf)` arrays on a black `width` x `height` canvas."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    draw_bodypose, keypoint = _controlnet_aux_drawing()
    for pose in poses:
        points = [keypoint(float(x), float(y), float(c)) if c > 0 else None for x, y, c in np.asarray(pose)]
        canvas = draw_bodypose(canvas, points)
    return Image.fromarray(canvas)


@lru_cache(maxsize=1)
def _controlnet_aux_drawing():
    with warnings.catch_warnings():  # controlnet_aux's package import warns about timm and torch.jit
        warnings.simplefilter("ignore")
        from controlnet_aux.open_pose.body import Keypoint
        from controlnet_aux.open_pose.util import draw_bodypose
    return draw_bodypose, Keypoint
