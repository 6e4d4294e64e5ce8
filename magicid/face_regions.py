"""Face regions of a layout: the face box estimated from a skeleton's head keypoints, the soft elliptical mask
`M_id^i` around it that MGMICA (Alg. 1) and MGFF use, and the box arithmetic on them."""

from __future__ import annotations

import numpy as np

from magicid.skeleton import FACE_JOINTS, L_EAR, L_EYE, L_SHOULDER, NECK, NOSE, R_EAR, R_EYE, R_SHOULDER


# Face boxes estimated from keypoints mimic the face detector's (MTCNN) boxes, so that the IoU > 0.5 rule of the
# report can match generated faces to layout regions: their height / width, and the cue factors in `_face_width`,
# were fitted on 52 people in the test photos (median IoU with the detected box 0.79).
FACE_ASPECT = 1.32
MASK_MARGIN = 1.15  # ellipse semi-axes relative to the face box: take in hairline, chin and cheeks
MASK_SOFT_EDGE = 0.3  # width of the soft edge, in units of the ellipse radius
# `magicid.mgmica` averages each mask over the cells of a layer's token grid: a face far smaller than a cell (32 px
# at the 16 x 16 grid of a 512 canvas) would get only a faint weight there, so masks are at least this big
MIN_MASK_RADIUS = 1 / 22  # of the canvas' longer side


def face_box_from_keypoints(keypoints: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Estimate the face box (px) from the head keypoints (without any: just above the neck).

    Face width is the largest of several head-size cues (ear to ear, eye to eye, nose to neck, eye to ear),
    because each one shrinks when the head turns or tilts, but never grows. None when neither a head point
    nor the neck is visible.
    """
    points = {j: keypoints[j, :2] * (width, height) for j in range(18) if keypoints[j, 2] > 0}
    face_points = [points[j] for j in FACE_JOINTS if j in points]
    face_width = _face_width(points)
    if face_points:
        centre_x = float(np.mean([p[0] for p in face_points]))
        eye_nose = [points[j][1] for j in (NOSE, R_EYE, L_EYE) if j in points] or [p[1] for p in face_points]
        centre_y = float(np.mean(eye_nose)) + 0.05 * face_width  # the chin is further below the nose than the brow
    elif NECK in points:  # seen from behind, or a head the detector missed
        centre_x, centre_y = float(points[NECK][0]), float(points[NECK][1]) - 1.2 * face_width
    else:
        return None
    half_w, half_h = face_width / 2, face_width * FACE_ASPECT / 2
    return np.array([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h])


def _face_width(points: dict[int, np.ndarray]) -> float:
    def distance(a: int, b: int) -> float:
        return float(np.linalg.norm(points[a] - points[b])) if a in points and b in points else 0.0

    cues = [
        0.86 * distance(R_EAR, L_EAR),
        2.1 * distance(R_EYE, L_EYE),
        0.68 * distance(NOSE, NECK),
        1.45 * max(distance(R_EYE, R_EAR), distance(L_EYE, L_EAR)),
    ]
    width = max(cues)
    if width <= 0:
        width = 0.32 * distance(R_SHOULDER, L_SHOULDER)
    return width if width > 0 else 16.0  # a lone head point: a small default face


def soft_ellipse_mask(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """A `(height, width)` float32 mask: 1 on an ellipse around `box` (px), a smooth edge, exactly 0 beyond it.

    Compact support (rather than a Gaussian tail) keeps each identity exactly out of the other faces.
    """
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    min_radius = MIN_MASK_RADIUS * max(width, height)
    radius_x = max((box[2] - box[0]) / 2 * MASK_MARGIN, min_radius)
    radius_y = max((box[3] - box[1]) / 2 * MASK_MARGIN, min_radius)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    radius = np.sqrt(((xs + 0.5 - centre_x) / radius_x) ** 2 + ((ys + 0.5 - centre_y) / radius_y) ** 2)
    edge = np.clip((radius - (1 - MASK_SOFT_EDGE)) / (2 * MASK_SOFT_EDGE), 0, 1)
    return (1 - edge * edge * (3 - 2 * edge)).astype(np.float32)  # smoothstep falloff


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def visible_fraction(box: np.ndarray, width: int, height: int) -> float:
    area = (box[2] - box[0]) * (box[3] - box[1])
    inside = max(0.0, min(box[2], width) - max(box[0], 0)) * max(0.0, min(box[3], height) - max(box[1], 0))
    return float(inside / area) if area > 0 else 0.0
