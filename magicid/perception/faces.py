"""Face detection (boxes, scores, 5 points) and ArcFace alignment."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from magicid.config import Limits
from magicid.errors import NoFaceError
from magicid.perception import models


MIN_FACE_SCORE = {"mtcnn": 0.9, "scrfd": 0.5}  # MTCNN below 0.9 finds faces in clothes and hands
MIN_DETECTION_SIDE = 640  # smaller images are enlarged to this (at most 2x) so ~20 px faces reach MTCNN's floor
MIN_SEARCH_SIDE = 24  # a detection copy thinner than this holds no findable face (and MTCNN's pyramid is empty)


@dataclass
class Face:
    """One detected face, in pixels of the image it was found in."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    kps5: np.ndarray  # (5, 2) left eye, right eye, nose, left mouth corner, right mouth corner (as seen)
    landmarks: np.ndarray | None = None  # dense (K, 2) if computed

    @property
    def size(self) -> float:
        """max(width, height) of the box in pixels."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def center(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    def box_norm(self, width: int, height: int) -> np.ndarray:
        """The box in [0, 1] of a `width` x `height` image."""
        return self.box / np.array([width, height, width, height], dtype=np.float64)


def detection_scale(width: int, height: int, limits: Limits | None = None) -> float:
    """Factor for the detection copy: big images down to `detection_max_side`, small ones up to 640 px (<= 2x)."""
    limits = limits or Limits()
    longer = max(width, height)
    if longer > limits.detection_max_side:
        return limits.detection_max_side / longer
    return min(2.0, max(1.0, MIN_DETECTION_SIDE / longer))


def detect_faces(image: Image.Image, limits: Limits | None = None) -> list[Face]:
    """All faces in `image`, largest first, in `image` pixels.

    insightface SCRFD when a model pack is on disk (see `models.insightface_root`), else MTCNN; both run on a copy
    at the detection resolution and their coordinates are mapped back.
    """
    scale = detection_scale(*image.size, limits)
    work = image.convert("RGB")
    if abs(scale - 1.0) > 1e-3:
        work = work.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    if min(work.size) < MIN_SEARCH_SIDE:
        return []
    detector, boxes, scores, points = _raw_detections(work)
    faces = [
        Face(box=_clip_box(box / scale, image.size), score=float(score), kps5=(kps / scale).astype(np.float64))
        for box, score, kps in zip(boxes, scores, points)
        if score >= MIN_FACE_SCORE[detector]
    ]
    return sorted(faces, key=lambda face: face.size, reverse=True)


def _raw_detections(work: Image.Image) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """(detector name, boxes (N, 4), scores (N,), 5 points (N, 5, 2)) in `work` pixels."""
    scrfd = models.scrfd()
    if scrfd is not None:
        input_size = tuple(int(np.ceil(side / 32) * 32) for side in work.size)  # full detection resolution
        bgr = np.ascontiguousarray(np.asarray(work)[:, :, ::-1])
        with models.ONNX_LOCK:
            detections, points = scrfd.detect(bgr, input_size=input_size)
        return "scrfd", detections[:, :4], detections[:, 4], points
    with models.TORCH_LOCK:
        boxes, scores, points = models.mtcnn().detect(work, landmarks=True)
    if boxes is None:
        return "mtcnn", np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2))
    return "mtcnn", boxes, scores, points


def main_face(image: Image.Image, name: str | None = None) -> tuple[Face, list[str]]:
    """The largest face and user-facing warnings; `NoFaceError` if there is none."""
    name = name or image.info.get("source") or "the photo"
    faces = detect_faces(image)
    if not faces:
        raise NoFaceError(f"No face found in {name}: upload a photo where the face is visible")
    warnings = []
    if len(faces) > 1:
        warnings.append(f"{len(faces)} faces found in {name}; using the largest")
    return faces[0], warnings


def align_face(image: Image.Image, face: Face, size: int = 112) -> Image.Image:
    """ArcFace similarity alignment of `face` from its 5 points (112 for embedders, 224 for CLIP)."""
    from insightface.utils import face_align

    pixels = np.asarray(image.convert("RGB"))
    with warnings.catch_warnings():  # insightface calls a scikit-image API deprecated in 0.26; harmless, noisy
        warnings.filterwarnings("ignore", category=FutureWarning, module="insightface")
        aligned = face_align.norm_crop(pixels, landmark=face.kps5.astype(np.float32), image_size=size)
    return Image.fromarray(aligned)


def crop_around(image: Image.Image, box: np.ndarray, grow: float) -> tuple[Image.Image, np.ndarray]:
    """Square crop around `box` grown by `grow` x its size on each side, clipped to the image; and its offset."""
    center = (box[:2] + box[2:]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * (0.5 + grow)
    x0, y0 = np.maximum(np.floor(center - half), 0).astype(int)
    x1 = int(min(np.ceil(center[0] + half), image.width))
    y1 = int(min(np.ceil(center[1] + half), image.height))
    return image.crop((x0, y0, x1, y1)), np.array([x0, y0], dtype=np.float64)


def _clip_box(box: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    return np.clip(box.astype(np.float64), 0, [width, height, width, height])
