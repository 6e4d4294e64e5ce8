"""One image's perception, computed at most once per request: its faces, and each face's embedding per embedder.

The identity check, DIIR's face matching, the measurement after restoration, the report and the evaluation's judge
all read the same `ImageAnalysis` of an image instead of detecting and embedding it again in every step.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from magicid.config import Limits
from magicid.perception.faces import Face, detect_faces


class ImageAnalysis:
    """Lazily computed, cached perception of `image` (RGB). `faces` may be given when they are already known."""

    def __init__(self, image: Image.Image, faces: list[Face] | None = None, limits: Limits | None = None):
        self.image = image if image.mode == "RGB" else image.convert("RGB")
        self.limits = limits
        self._faces = None if faces is None else list(faces)
        self._embeddings: dict[tuple[str, tuple[float, ...]], np.ndarray] = {}

    @classmethod
    def of(cls, image_or_analysis: Image.Image | ImageAnalysis) -> ImageAnalysis:
        return image_or_analysis if isinstance(image_or_analysis, ImageAnalysis) else cls(image_or_analysis)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    @property
    def faces(self) -> list[Face]:
        """Every detected face, largest first (detected on first use)."""
        if self._faces is None:
            self._faces = detect_faces(self.image, self.limits)
        return self._faces

    def faces_smaller_than(self, threshold_px: int) -> list[Face]:
        return [face for face in self.faces if face.size < threshold_px]

    def embedding(self, embedder, face: Face) -> np.ndarray:
        """`embedder`'s embedding of `face` (one of this image's faces), computed once per embedder and face."""
        key = (embedder.name, tuple(float(value) for value in face.box))
        if key not in self._embeddings:
            self._embeddings[key] = embedder.embed(self.image, face)
        return self._embeddings[key]

    def embeddings(self, embedder, faces: list[Face] | None = None) -> list[np.ndarray]:
        return [self.embedding(embedder, face) for face in (self.faces if faces is None else faces)]
