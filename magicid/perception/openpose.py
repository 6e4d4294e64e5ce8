"""OpenPose-18 skeleton rendering exactly as the OpenPose ControlNets were trained on.

controlnet_aux's `draw_bodypose` is used when it imports (it pulls mediapipe's legacy API at import time and fails
with mediapipe >= 0.10.30); otherwise `draw_bodypose_local`, which follows the same conventions: COCO-18 order,
the 17-limb sequence, the 18-colour palette, stickwidth 4, limbs at 60 % colour, joints as 4 px discs.
"""

from __future__ import annotations

import logging
import math
import warnings
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image


logger = logging.getLogger(__name__)

# (from, to) joint indices, 0-based, in the order the colours below are assigned
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
STICKWIDTH = 4


def draw_openpose(poses: list[np.ndarray], width: int, height: int) -> Image.Image:
    """Render persons given as (18, 3) `(x_norm, y_norm, conf)` arrays on a black `width` x `height` canvas."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    draw = _library_draw_bodypose()
    for pose in poses:
        if draw is not None:
            canvas = draw(canvas, _to_library_keypoints(pose))
        else:
            canvas = draw_bodypose_local(canvas, pose)
    return Image.fromarray(canvas)


def draw_bodypose_local(canvas: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Draw one person on an RGB uint8 canvas (in place); joints with confidence 0 are skipped."""
    height, width = canvas.shape[:2]
    visible = np.asarray(pose)[:, 2] > 0
    points = np.asarray(pose)[:, :2] * [width, height]
    for (start, end), color in zip(LIMBS, COLORS):
        if not (visible[start] and visible[end]):
            continue
        (x0, y0), (x1, y1) = points[start], points[end]
        center = (int(np.mean([x0, x1])), int(np.mean([y0, y1])))
        half_length = int(math.hypot(x1 - x0, y1 - y0) / 2)
        angle = int(math.degrees(math.atan2(y0 - y1, x0 - x1)))
        polygon = cv2.ellipse2Poly(center, (half_length, STICKWIDTH), angle, 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in color])
    for (x, y), shown, color in zip(points, visible, COLORS):
        if shown:
            cv2.circle(canvas, (int(x), int(y)), 4, color, thickness=-1)
    return canvas


def _to_library_keypoints(pose: np.ndarray) -> list:
    from controlnet_aux.open_pose.body import Keypoint

    return [Keypoint(float(x), float(y), float(c)) if c > 0 else None for x, y, c in np.asarray(pose)]


@lru_cache(maxsize=1)
def _library_draw_bodypose():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from controlnet_aux.open_pose.util import draw_bodypose
    except ImportError as error:  # controlnet_aux's package import breaks with newer mediapipe; same output here
        logger.info("controlnet_aux drawing unavailable (%s); using the local OpenPose renderer", error)
        return None
    return draw_bodypose
