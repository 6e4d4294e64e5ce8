"""Dense face landmarks and the landmark condition image of the MediaPipe-face ControlNet."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from magicid.perception import models
from magicid.perception.faces import Face, crop_around


MESH_POINTS = 478
RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER = 468, 473  # mediapipe indices (the subject's right / left)
CROP_GROW = 0.5  # FaceMesh wants the whole head with margin, like its own detector's crop
MESH_INPUT_SIDE = 256  # crops are resized to this so tiny faces still reach the mesh model


def face_landmarks(image: Image.Image, face: Face) -> np.ndarray:
    """Dense landmarks in `image` pixels: mediapipe FaceMesh (478, 2) on a face crop, else dlib (68, 2)."""
    mesh = _mesh_landmarks(image, face)
    return mesh if mesh is not None else dlib_landmarks(image, face)


def _mesh_landmarks(image: Image.Image, face: Face) -> np.ndarray | None:
    crop, offset = crop_around(image, face.box, grow=CROP_GROW)
    scale = MESH_INPUT_SIDE / max(crop.size)
    resized = crop.convert("RGB").resize(
        (max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.BICUBIC
    )
    square = Image.new("RGB", (MESH_INPUT_SIDE, MESH_INPUT_SIDE))  # FaceMesh projects its points right on squares only
    square.paste(resized, (0, 0))
    result = models.run_mediapipe(models.face_mesh(), np.asarray(square))
    if not result.multi_face_landmarks:
        return None
    points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
    return points * MESH_INPUT_SIDE / scale + offset


def dlib_landmarks(image: Image.Image, face: Face) -> np.ndarray:
    """dlib's 68 iBUG points inside the detected box, in `image` pixels."""
    import dlib

    crop, offset = crop_around(image, face.box, grow=0.5)
    pixels = np.ascontiguousarray(np.asarray(crop.convert("RGB")))
    x0, y0, x1, y1 = (face.box - np.tile(offset, 2)).round().astype(int)
    with models.DLIB_LOCK:
        shape = models.dlib_shape_predictor_68()(pixels, dlib.rectangle(x0, y0, x1, y1))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) + offset


# Colours of the CrucibleAI/ControlNetMediaPipeFace annotator, as they end up in the RGB condition image
# (the annotator draws these BGR tuples and then flips channels).
HEAD_RGB = (10, 200, 10)
MOUTH_RGB = (10, 180, 10)
LEFT_EYE_RGB, LEFT_EYEBROW_RGB, LEFT_IRIS_RGB = (10, 200, 180), (10, 220, 180), (10, 200, 250)
RIGHT_EYE_RGB, RIGHT_EYEBROW_RGB, RIGHT_IRIS_RGB = (180, 200, 10), (180, 220, 10), (250, 200, 10)


@lru_cache(maxsize=1)
def mesh_contour_colors() -> dict[tuple[int, int], tuple[int, int, int]]:
    """Face-mesh contour edges (oval, eyes, brows, lips) with their colours, as the ControlNet was trained."""
    from mediapipe.python.solutions import face_mesh_connections as mesh

    groups = (
        (mesh.FACEMESH_FACE_OVAL, HEAD_RGB),
        (mesh.FACEMESH_LEFT_EYE, LEFT_EYE_RGB),
        (mesh.FACEMESH_LEFT_EYEBROW, LEFT_EYEBROW_RGB),
        (mesh.FACEMESH_RIGHT_EYE, RIGHT_EYE_RGB),
        (mesh.FACEMESH_RIGHT_EYEBROW, RIGHT_EYEBROW_RGB),
        (mesh.FACEMESH_LIPS, MOUTH_RGB),
    )
    return {edge: color for edges, color in groups for edge in edges}


def draw_face_landmarks(landmarks: list[np.ndarray], width: int, height: int) -> Image.Image:
    """Landmark condition image: black canvas, face-mesh contours and irises per face in the annotator's colours.

    Lines are 2 px (the training setting) for faces of 64 px and more, 1 px below, so small faces stay legible.
    Faces given as dlib 68 points are drawn as their contours in the same colours.
    """
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for points in landmarks:
        points = np.asarray(points, dtype=np.float64)
        face_size = float(np.ptp(points, axis=0).max()) if len(points) else 0.0
        thickness = 2 if face_size >= 64 else 1
        edges = mesh_contour_colors() if len(points) >= MESH_POINTS - 10 else _dlib_contour_colors()
        for (start, end), color in edges.items():
            if max(start, end) < len(points):
                cv2.line(canvas, _pixel(points[start]), _pixel(points[end]), color, thickness)
        if len(points) >= MESH_POINTS:
            for index, color in ((RIGHT_IRIS_CENTER, RIGHT_IRIS_RGB), (LEFT_IRIS_CENTER, LEFT_IRIS_RGB)):
                _draw_pupil(canvas, points[index], color, halfwidth=thickness)
    return Image.fromarray(canvas)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(np.floor(point[0])), int(np.floor(point[1]))


def _draw_pupil(canvas: np.ndarray, point: np.ndarray, color: tuple[int, int, int], halfwidth: int) -> None:
    x, y = _pixel(point)
    height, width = canvas.shape[:2]
    if 0 <= x < width and 0 <= y < height:
        canvas[max(0, y - halfwidth) : y + halfwidth, max(0, x - halfwidth) : x + halfwidth] = color


@lru_cache(maxsize=1)
def _dlib_contour_colors() -> dict[tuple[int, int], tuple[int, int, int]]:
    """iBUG-68 polylines, coloured like the mesh groups they correspond to (as seen: subject's right = image left)."""

    def chain(first: int, last: int, closed: bool = False) -> list[tuple[int, int]]:
        edges = [(i, i + 1) for i in range(first, last)]
        return edges + [(last, first)] if closed else edges

    groups = (
        (chain(0, 16), HEAD_RGB),
        (chain(17, 21), RIGHT_EYEBROW_RGB),
        (chain(22, 26), LEFT_EYEBROW_RGB),
        (chain(36, 41, closed=True), RIGHT_EYE_RGB),
        (chain(42, 47, closed=True), LEFT_EYE_RGB),
        (chain(48, 59, closed=True) + chain(60, 67, closed=True), MOUTH_RGB),
    )
    return {edge: color for edges, color in groups for edge in edges}
