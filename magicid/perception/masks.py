"""Soft face-region masks (for MGFF, DIIR paste-back and layouts).

No face-parsing model ships offline, so the region is the convex hull of the dense landmarks and of the ellipse
inscribed in the face box (the mesh stops at the hairline, dlib's 68 points at the brows), intersected with
mediapipe's person segmentation of the face crop, with a Gaussian soft edge.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from magicid.perception import models
from magicid.perception.faces import Face, crop_around
from magicid.perception.landmarks import face_landmarks


SEGMENTATION_CROP_GROW = 1.0  # person segmentation runs on the face with a face-size margin: sharper than full frame
MIN_SEGMENTATION_KEEP = 0.7  # if the person mask removes more of the hull than this allows, it missed the person


def face_region_mask(
    image: Image.Image, face: Face, landmarks: np.ndarray | None = None, blur_px: int = 7
) -> np.ndarray:
    """(H, W) float32 mask in [0, 1] of the face region, soft-edged by a Gaussian of sigma `blur_px`.

    The sigma is capped at a tenth of the face size so small faces keep a solid core.
    """
    if landmarks is None:
        landmarks = face.landmarks if face.landmarks is not None else face_landmarks(image, face)
    hull = hull_mask(np.concatenate([landmarks, box_ellipse(face.box)]), image.size)
    person = person_mask(image, face)
    kept = np.logical_and(hull, person)
    region = kept if kept.sum() >= MIN_SEGMENTATION_KEEP * hull.sum() else hull
    return soften(region, min(blur_px, face.size / 10))  # a 7 px blur would wash out a 30 px face


def hull_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) mask of the convex hull of pixel `points`, clipped to the image."""
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def box_ellipse(box: np.ndarray, count: int = 32) -> np.ndarray:
    """`count` points on the ellipse inscribed in the box."""
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
    center = (box[:2] + box[2:]) / 2
    radii = (box[2:] - box[:2]) / 2
    return center + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii


def person_mask(image: Image.Image, face: Face, threshold: float = 0.5) -> np.ndarray:
    """Boolean (H, W) person segmentation around the face (False outside the segmented crop)."""
    crop, offset = crop_around(image, face.box, grow=SEGMENTATION_CROP_GROW)
    result = models.run_mediapipe(models.selfie_segmentation(), np.asarray(crop.convert("RGB")))
    mask = np.zeros((image.height, image.width), dtype=bool)
    x0, y0 = offset.astype(int)
    mask[y0 : y0 + crop.height, x0 : x0 + crop.width] = result.segmentation_mask > threshold
    return mask


def soften(mask: np.ndarray, blur_px: float) -> np.ndarray:
    """Gaussian soft edge of sigma `blur_px`, as float32 in [0, 1]."""
    soft = mask.astype(np.float32)
    if blur_px > 0:
        soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=blur_px, sigmaY=blur_px, borderType=cv2.BORDER_CONSTANT)
    return np.clip(soft, 0.0, 1.0)
